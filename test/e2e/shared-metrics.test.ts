// The shared-mode daemon's metrics (--metrics-address, src/daemon/metrics-server.ts) under a
// real containerd 1.6: 20 wasm containers run through ctr, the endpoint is scraped over its
// unix socket and every scrape is parsed by Prometheus' own text parser (github.com/prometheus/
// common/expfmt, tools/promparse). Checked: the 20 running containers and their sandboxes,
// each one's linear memory, CPU time and open files, one compile then cache hits, and the
// kill-to-exit histogram counting the kills, a wasi:http service's requests counted and timed.
// A non-loopback address is refused before the daemon takes anything. Needs root, containerd,
// runc and Go (for the parser).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { writeImageArchive } from "../../tools/image/index.ts";
import { DAEMON, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { freePort, HTTP_IMAGE, runScript } from "../support/http-services.ts";
import { IMAGES, REPO, type ShimEnv, WASM } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 120_000;
const N = 20;
/** Requests sent to the wasi:http service. */
const HTTP_N = 7;
const PROMPARSE = join(REPO, "build/promparse");

interface Parsed {
  type: string;
  help: string;
  metrics: {
    labels: Record<string, string>;
    value?: number;
    histogram?: { count: number; sum: number; buckets: { le: number; count: number }[] };
  }[];
}
type Scrape = Record<string, Parsed>;

/** Builds tools/promparse (a no-op when up to date), as scripts/setup.sh does. */
function buildParser(): void {
  const env = { ...process.env, PATH: `${process.env.PATH ?? ""}:/usr/local/go/bin` };
  const r = Bun.spawnSync(["bash", join(REPO, "tools/promparse/build.sh")], { env, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`tools/promparse/build.sh failed: ${r.stdout.toString()}${r.stderr.toString()}`);
}

/** `text` through Prometheus' parser; its error if it rejects the text. */
function parse(text: string): Scrape {
  const r = Bun.spawnSync([PROMPARSE], { stdin: new TextEncoder().encode(text), stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`Prometheus' parser rejected the scrape: ${r.stderr.toString()}\n${text}`);
  return JSON.parse(r.stdout.toString()) as Scrape;
}

/** The single value of a family without labels (or with exactly `labels`). */
function value(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  const f = s[name];
  if (!f) throw new Error(`no family ${name} in the scrape`);
  const m = f.metrics.find((x) => JSON.stringify(x.labels) === JSON.stringify(labels));
  if (m?.value === undefined) throw new Error(`no sample ${name}${JSON.stringify(labels)}: ${JSON.stringify(f.metrics)}`);
  return m.value;
}

/** Per container of `ns`: id → value. */
function perContainer(s: Scrape, name: string, ns: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of s[name]?.metrics ?? []) if (m.labels.namespace === ns && m.value !== undefined) out.set(m.labels.id as string, m.value);
  return out;
}

describe("shared mode: the daemon's Prometheus metrics", () => {
  let shared: SharedEnv | undefined;
  let dir: string;
  let env: ShimEnv;
  let socket: string;
  const ids = Array.from({ length: N }, (_, i) => `shm-${process.pid}-${i}`);
  const httpId = `shm-${process.pid}-http`;
  let lastText = "";
  /** The scrape with the 20 containers running, printed at the end for the record. */
  let fullText = "";

  async function scrape(): Promise<Scrape> {
    const r = await fetch("http://localhost/metrics", { unix: socket });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    lastText = await r.text();
    return parse(lastText);
  }

  beforeAll(async () => {
    buildParser();
    // The wasi:http host library and the handler component (test/wasm/http).
    runScript("http-host.sh");
    runScript("build-http-components.sh");
    shared = await sharedEnv({ prefix: "/tmp/bwm-", daemonArgs: (d) => ["--metrics-address", `unix://${join(d, "metrics.sock")}`] });
    ({ dir, env } = shared);
    socket = join(dir, "metrics.sock");
  }, 300_000);

  afterAll(async () => {
    if (fullText) console.log(fullText);
    for (const id of [...ids, httpId]) {
      await env?.cd.ctr(["task", "kill", "-s", "SIGKILL", id]).catch(() => {});
      await env?.cd.ctr(["task", "delete", "--force", id]).catch(() => {});
      await env?.cd.ctr(["container", "delete", id]).catch(() => {});
    }
    await shared?.stop();
  }, T);

  test(
    "a non-loopback address is refused at start, saying why; nothing is bound",
    () => {
      for (const addr of ["0.0.0.0:9464", "[::]:9464", "192.0.2.1:9464"]) {
        const r = Bun.spawnSync([DAEMON, "--socket", join(dir, "other", "w.sock"), "--metrics-address", addr], {
          stdout: "pipe",
          stderr: "pipe",
        });
        expect(r.exitCode).toBe(2);
        expect(r.stderr.toString()).toContain("is not a loopback address. The daemon's metrics name every pod's containers");
        // It stopped before its lock and socket: nothing of it was made.
        expect(existsSync(join(dir, "other"))).toBe(false);
      }
    },
    T,
  );

  test(
    "before any container: no sandbox, nothing compiled, no kill; the daemon's own figures",
    async () => {
      const s = await scrape();
      expect(value(s, "bunwasi_sandboxes")).toBe(0);
      expect(value(s, "bunwasi_containers", { kind: "wasm", state: "running" })).toBe(0);
      expect(value(s, "bunwasi_compiles_total")).toBe(0);
      expect(value(s, "bunwasi_compile_cache_hits_total")).toBe(0);
      expect(s.bunwasi_kill_exit_seconds?.type).toBe("HISTOGRAM");
      expect(s.bunwasi_kill_exit_seconds?.metrics[0]?.histogram?.count).toBe(0);
      expect(value(s, "process_resident_memory_bytes")).toBeGreaterThan(0);
      expect(value(s, "bunwasi_daemon_pss_bytes")).toBeGreaterThan(0);
      expect(value(s, "process_open_fds")).toBeGreaterThan(0);
      expect(value(s, "process_threads")).toBeGreaterThan(0);
      // No container: the per-container families are there with no sample (the parser keeps no empty family).
      expect(s.bunwasi_container_cpu_seconds_total).toBeUndefined();
      expect(lastText).toContain("# TYPE bunwasi_container_cpu_seconds_total counter\n");
    },
    T,
  );

  test(`${N} wasm containers: counted running, each with its memory, CPU and open files; one compile, then cache hits`, async () => {
    const ns = env.cd.namespace;
    const start = async (id: string) => {
      const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, "/wasi-demo-app.wasm", "daemon"]);
      if (r.code !== 0) throw new Error(`ctr run ${id}: ${r.stderr}`);
    };
    // The first alone: its Create compiles the module; every later Create finds it in the cache.
    await start(ids[0] as string);
    const first = await scrape();
    expect(value(first, "bunwasi_compiles_total")).toBe(1);
    expect(value(first, "bunwasi_compile_cache_misses_total")).toBe(1);
    expect(value(first, "bunwasi_compile_cache_hits_total")).toBe(0);
    for (let i = 1; i < N; i += 4) await Promise.all(ids.slice(i, i + 4).map(start));

    // Each module's memory is known once it is instantiated (ctr run -d returns at Start).
    const s = await until(
      `${N} containers with their memory in the scrape`,
      async () => {
        const x = await scrape();
        return perContainer(x, "bunwasi_container_memory_bytes", ns).size === N ? x : undefined;
      },
      60_000,
    );
    fullText = lastText;
    expect(value(s, "bunwasi_containers", { kind: "wasm", state: "running" })).toBe(N);
    expect(value(s, "bunwasi_containers", { kind: "wasm", state: "stopped" })).toBe(0);
    expect(value(s, "bunwasi_wasm_runs")).toBe(N);
    // ctr run without a pod: each container is a sandbox of its own.
    expect(value(s, "bunwasi_sandboxes")).toBe(N);
    expect(value(s, "bunwasi_compiles_total")).toBe(1);
    expect(value(s, "bunwasi_compile_cache_hits_total")).toBe(N - 1);
    expect(value(s, "bunwasi_compile_cache_misses_total")).toBe(1);

    const memory = perContainer(s, "bunwasi_container_memory_bytes", ns);
    const cpu = perContainer(s, "bunwasi_container_cpu_seconds_total", ns);
    const files = perContainer(s, "bunwasi_container_open_files", ns);
    const limit = perContainer(s, "bunwasi_container_memory_limit_bytes", ns);
    expect([...memory.keys()].sort()).toEqual([...ids].sort());
    for (const id of ids) {
      // At least one 64 KiB wasm page, within the daemon's default limit (512 MiB).
      expect(memory.get(id)).toBeGreaterThanOrEqual(65536);
      expect(limit.get(id)).toBe(512 * 2 ** 20);
      expect(memory.get(id)).toBeLessThanOrEqual(limit.get(id) as number);
      // Its thread has run: instantiation and the module's start are CPU time.
      expect(cpu.get(id)).toBeGreaterThan(0);
      // Its preopened root, at least.
      expect(files.get(id)).toBeGreaterThanOrEqual(1);
    }
    // Every sample of a container names its sandbox (here its own id) and its namespace.
    for (const m of s.bunwasi_container_memory_bytes?.metrics ?? []) expect(m.labels.sandbox).toBe(m.labels.id as string);
    // The daemon's threads as /proc counts them (not one per run: the run pools hold these
    // 20): a scrape between two equal counts says that count.
    const daemonThreads = () => readdirSync(`/proc/${shared?.daemon.pid}/task`).length;
    const steady = await until("a scrape between two equal thread counts", async () => {
      const before = daemonThreads();
      const figure = value(await scrape(), "process_threads");
      return daemonThreads() === before ? { before, figure } : undefined;
    });
    expect(steady.figure).toBe(steady.before);
  }, 300_000);

  test(
    "kills: the kill-to-exit histogram counts each one, and the containers count as stopped",
    async () => {
      const before = (await scrape()).bunwasi_kill_exit_seconds?.metrics[0]?.histogram;
      expect(before?.count).toBe(0);
      const killed = ids.slice(0, 5);
      for (const id of killed) {
        const r = await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
        expect(r.code).toBe(0);
      }
      const s = await until("5 killed containers stopped", async () => {
        const x = await scrape();
        return value(x, "bunwasi_containers", { kind: "wasm", state: "stopped" }) === killed.length ? x : undefined;
      });
      const h = s.bunwasi_kill_exit_seconds?.metrics[0]?.histogram;
      expect(h?.count).toBe(killed.length);
      expect(h?.sum).toBeGreaterThan(0);
      // Cumulative buckets ending in +Inf with every observation.
      const counts = h?.buckets.map((b) => b.count) ?? [];
      expect(counts).toEqual([...counts].sort((a, b) => a - b));
      expect(h?.buckets.at(-1)?.count).toBe(killed.length);
      expect(value(s, "bunwasi_containers", { kind: "wasm", state: "running" })).toBe(N - killed.length);
      expect(value(s, "bunwasi_wasm_runs")).toBe(N - killed.length);
      // An exited module has no thread and no memory left to report.
      expect(perContainer(s, "bunwasi_container_memory_bytes", env.cd.namespace).size).toBe(N - killed.length);
    },
    T,
  );

  test(
    `a wasi:http service: its ${HTTP_N} requests counted and timed`,
    async () => {
      const archive = join(dir, "http.tar");
      writeImageArchive(archive, {
        name: HTTP_IMAGE,
        files: [{ path: "/handler.wasm", source: join(WASM, "http", "handler.wasm") }],
        config: { entrypoint: ["/handler.wasm"], env: ["PATH=/"] },
      });
      expect((await env.cd.ctr(["images", "import", archive])).code).toBe(0);
      const port = freePort();
      const r = await env.cd.ctr([
        "run",
        "-d",
        "--runtime",
        SHARED_RUNTIME,
        "--env",
        `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${port}`,
        HTTP_IMAGE,
        httpId,
        "/handler.wasm",
      ]);
      expect(r.code).toBe(0);
      // Its counters appear once it serves: no request has been sent to it yet.
      const ns = env.cd.namespace;
      const serving = await until("the service's counters in the scrape", async () => {
        const x = await scrape();
        return perContainer(x, "bunwasi_http_requests_total", ns).has(httpId) ? x : undefined;
      });
      expect(perContainer(serving, "bunwasi_http_requests_total", ns).get(httpId)).toBe(0);
      const latency = (x: Scrape) => {
        const f = x.bunwasi_http_request_duration_seconds;
        expect(f?.type).toBe("HISTOGRAM");
        const ms = f?.metrics.filter((m) => m.labels.namespace === ns) ?? [];
        // Only the service has one: a module that is not one has no http samples.
        expect(ms.map((m) => m.labels)).toEqual([{ namespace: ns, id: httpId, sandbox: httpId }]);
        return ms[0]?.histogram;
      };
      expect(latency(serving)?.count).toBe(0);
      for (let i = 0; i < HTTP_N; i++) {
        const res = await fetch(`http://127.0.0.1:${port}/`);
        expect(res.status).toBe(200);
        expect(await res.text()).toBe("hello from wasi:http\n");
      }
      const s = await scrape();
      expect(perContainer(s, "bunwasi_http_requests_total", ns).get(httpId)).toBe(HTTP_N);
      expect(perContainer(s, "bunwasi_http_requests_failed_total", ns).get(httpId)).toBe(0);
      expect(perContainer(s, "bunwasi_http_requests_total", ns).size).toBe(1);
      // Each request timed once (its body was read to its end above), every one in the +Inf
      // bucket, the cumulative counts ascending, a positive sum.
      const h = latency(s);
      expect(h?.count).toBe(HTTP_N);
      expect(h?.sum).toBeGreaterThan(0);
      const counts = h?.buckets.map((b) => b.count) ?? [];
      expect(counts).toEqual([...counts].sort((a, b) => a - b));
      // 0.5 ms to 30 s, then +Inf (the parser writes it as the largest float: JSON has no infinity).
      expect(h?.buckets.map((b) => b.le)).toEqual([
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        Number.MAX_VALUE,
      ]);
      expect(h?.buckets.at(-1)?.count).toBe(HTTP_N);
    },
    T,
  );
});
