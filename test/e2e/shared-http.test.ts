// wasi:http services in shared mode: the containerd-wasmtimed daemon serves
// test/wasm/http/handler.c (a component in a Linux-rootfs image) on a listening socket it
// makes in the container's network namespace (src/linux/netns.ts) and hands to the http
// library. Through ctr on containerd 1.6 with the thin shim: a spec without a network
// namespace path listens in the daemon's namespace (the test reaches it on a loopback port),
// a spec with one (`--with-ns network:…`, an `ip netns` of the test's) listens there; requests,
// 1 MiB both ways, 50 concurrent, guest logs in the container log, 500 on a trap, a graceful
// stop, SIGKILL that cuts a request busy in wasm and one asleep, a second signal that cuts a
// drain, two services at once, bad
// settings, nothing left in the daemon after delete (no thread of the library, fds back),
// and a daemon killed under a service. Through the CRI (crictl, containerd 1.6's CRI plugin,
// handler wasmtimed): pods with their own network namespace set up by Debian's CNI plugins
// (bridge, host-local, loopback), reached at the pod's IP from the host, two pods on the
// same port, a graceful `crictl stop`, and nothing left after the pods are removed.
// The scenarios normal mode runs too come from test/support/http-services.ts, with this mode's
// checks (the daemon's pid, nothing left in it) as hooks.
// Needs root, containerd, runc, ip, nsenter, the CNI plugins (scripts/setup.sh).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { join } from "node:path";
import { containerStateDir } from "../../src/runtime-v2/paths.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { mountsUnder } from "../support/containerd.ts";
import { bridgeCni, CNI_BIN, type CriEnv, criEnv, K8S_NAMESPACE, SHARED_HANDLER } from "../support/cri.ts";
import { fileText, waitFile } from "../support/ctr-tasks.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv, startDaemon } from "../support/daemon.ts";
import { freePort, HELLO, HTTP_IMAGE, httpServiceScenarios, httpServices, refusedSoon, runScript } from "../support/http-services.ts";
import { REPO, type ShimEnv, WASM } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

/** Debian's containernetworking-plugins (scripts/setup.sh installs it). */
const canRun =
  process.getuid?.() === 0 &&
  existsSync("/usr/bin/containerd") &&
  !!Bun.which("runc") &&
  !!Bun.which("nsenter") &&
  !!Bun.which("ip") &&
  ["bridge", "host-local", "loopback"].every((p) => existsSync(join(CNI_BIN, p)));
// Stated as a test so that a machine without them fails loudly instead of skipping.
test("prerequisites: root, containerd, runc, nsenter, ip, the CNI plugins", () => expect(canRun).toBe(true));

const T = 120_000;
const IMAGE = HTTP_IMAGE;

let seq = 0;
const uid = (what: string) => `shh-${what}-${process.pid}-${seq++}`;

function run(argv: string[]): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")} → ${r.exitCode}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** The builds the services need. */
function buildServices(): void {
  runScript("http-host.sh");
  runScript("build-http-components.sh");
  runScript("build-shim.sh");
}

/** How many sandboxes the daemon has open. */
async function sandboxCount(daemon: Daemon): Promise<number> {
  const { client, manager } = await daemon.manager();
  try {
    return (await manager.listSandboxes({})).sandboxes.length;
  } finally {
    client.close();
  }
}

/** The image: the handler and a component with an import no host has. */
function httpImage(dir: string): string {
  const archive = join(dir, "http.tar");
  writeImageArchive(archive, {
    name: IMAGE,
    files: [
      { path: "/handler.wasm", source: join(WASM, "http", "handler.wasm") },
      { path: "/missing.wasm", source: join(WASM, "http", "missing.wasm") },
    ],
    config: { entrypoint: ["/handler.wasm"], env: ["PATH=/", "GREETING=from the image"] },
  });
  return archive;
}

/** What of the daemon a service could leak: its fds, its threads, the library's threads by name. */
function daemonUsage(pid: number): { fds: number; threads: number; httpThreads: number } {
  const tasks = readdirSync(`/proc/${pid}/task`);
  const names = tasks.map((t) => {
    try {
      return readFileSync(`/proc/${pid}/task/${t}/comm`, "utf8").trim();
    } catch {
      return "";
    }
  });
  return {
    fds: readdirSync(`/proc/${pid}/fd`).length,
    threads: tasks.length,
    // The library's tokio runtime names its threads bunwasi-http (comm is cut at 15 bytes).
    httpThreads: names.filter((n) => n.startsWith("bunwasi-http")).length,
  };
}

/** A process's address space (VmSize) in GiB. */
function vmSizeGiB(pid: number): number {
  return Number(/^VmSize:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]) / 1024 / 1024;
}

/** Socket inodes the daemon holds (its /proc/<pid>/fd links `socket:[N]`). */
function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m?.[1]) out.add(m[1]);
    } catch {}
  }
  return out;
}

/** Inodes of TCP sockets listening on `port` in a /proc/net/tcp(6) text. */
function listeningInodes(tcp: string, port: number): string[] {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  return tcp
    .split("\n")
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[1]?.endsWith(`:${hex}`) && f[3] === "0A")
    .map((f) => f[9] as string);
}

describe("wasi:http services in shared mode (ctr, containerd 1.6)", () => {
  let shared: SharedEnv | undefined;
  let dir: string;
  let daemon: Daemon;
  let env: ShimEnv;
  let logs: string;
  const services = httpServices({
    runtime: SHARED_RUNTIME,
    cd: () => env.cd,
    logs: () => logs,
    // No network namespace path in the spec: the daemon listens in its own, on loopback.
    addressArgs: (port) => ["--env", `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${port}`],
    diagnostics: () => `--- daemon ---\n${daemon.log().slice(-3000)}`,
  });
  const { serve, stop, ctrOk, tasks } = services;

  beforeAll(async () => {
    buildServices();
    shared = await sharedEnv({ prefix: "/tmp/bwhs-", stopSignal: "SIGTERM" });
    ({ dir, daemon, env } = shared);
    logs = join(dir, "logs");
    mkdirSync(logs);
    const r = await env.cd.ctr(["images", "import", httpImage(dir)]);
    if (r.code !== 0) throw new Error(`import: ${r.stderr}`);
    // One service served and stopped first: what the daemon makes once and keeps (its
    // compile thread, the library loaded) is then in every baseline the tests take.
    const warm = uid("warm");
    await serve(warm);
    await stop(warm);
  }, 1_800_000);

  afterAll(() => shared?.stop(), T);

  /** After a test's containers are deleted: no sandbox, run or library thread left, fds back. */
  async function expectDaemonClean(before: { fds: number }): Promise<void> {
    await until("the daemon's sandboxes to close", async () => (await sandboxCount(daemon)) === 0);
    let last = daemonUsage(daemon.pid);
    const after = await until("the library's threads to end and the fds to come back", () => {
      last = daemonUsage(daemon.pid);
      return last.httpThreads === 0 && last.fds <= before.fds ? last : undefined;
    }).catch((e) => {
      const fds = readdirSync(`/proc/${daemon.pid}/fd`).map((f) => `${f} → ${readlinkSync(`/proc/${daemon.pid}/fd/${f}`)}`);
      throw new Error(`${e.message}: before ${JSON.stringify(before)}, now ${JSON.stringify(last)}\n${fds.join("\n")}`);
    });
    expect(after.httpThreads).toBe(0);
    expect(after.fds).toBeLessThanOrEqual(before.fds);
  }

  httpServiceScenarios(
    services,
    {
      mode: "shared",
      uid,
      serveTitle:
        "requests answered in the daemon (the task's pid is the daemon's); env without the service's variables; 1 MiB both ways; 50 concurrent; guest logs in the container log; SIGTERM drains and exits 0; nothing left",
      serving: async (id) => {
        expect((await tasks()).get(id)?.pid).toBe(daemon.pid);
      },
      // The guest's stdout and stderr reach the container's log, not the daemon's.
      guestLogged: () => expect(daemon.log()).not.toContain("guest says hello"),
      leavesNothing: () => {
        const before = daemonUsage(daemon.pid);
        return () => expectDaemonClean(before);
      },
      secondSignal: {
        title: "a second signal during the drain cuts it, as in the executor: SIGTERM then SIGINT ends 130, the request cut, nothing left",
        draining: "SIGTERM: no new connections; draining 1 request(s)",
        cut: "SIGINT during the drain: 1 request(s) cut short",
      },
    },
    T,
  );

  test(
    "shared mode: SIGTERM, then SIGKILL while a guest spins in wasm and another sleeps: both requests are cut, exit 137, the library's threads end",
    async () => {
      const before = daemonUsage(daemon.pid);
      const id = uid("kill");
      // A grace far longer than the test: only the SIGKILL can end the drain.
      const { base, log } = await serve(id, { extra: ["--env", "BUNWASI_HTTP_GRACE_MS=600000"] });
      const spin = fetch(`${base}/spin`).then(
        (r) => `status ${r.status}`,
        () => "cut",
      );
      const asleep = fetch(`${base}/sleep/600000`).then(
        (r) => `status ${r.status}`,
        () => "cut",
      );
      expect(await waitFile(log, (t) => t.includes("guest spinning") && t.includes("guest sleeping"), 20_000)).toBe(true);
      await ctrOk(["task", "kill", id]);
      // Draining: the listener is closed, and the two requests hold the service.
      await until("the listener to close", () =>
        fetch(`${base}/`, { keepalive: false }).then(
          () => false,
          () => true,
        ),
      );
      expect((await tasks()).get(id)?.status).toBe("RUNNING");
      expect(await stop(id, "SIGKILL")).toBe(137);
      expect(await spin).toBe("cut");
      expect(await asleep).toBe("cut");
      await expectDaemonClean(before);
    },
    T,
  );

  test(
    "shared mode: two services at once in the daemon, each answering on its own port; stopping one leaves the other serving",
    async () => {
      const a = uid("two-a");
      const b = uid("two-b");
      const before = daemonUsage(daemon.pid);
      const vmBefore = vmSizeGiB(daemon.pid);
      const sa = await serve(a, { extra: ["--env", "GREETING=I am a"] });
      const sb = await serve(b, { extra: ["--env", "GREETING=I am b"] });
      try {
        // No pooling allocator in the daemon: its reservation is ~4 TiB of address space per
        // service, which would run the daemon's address space out after about 30.
        expect(vmSizeGiB(daemon.pid) - vmBefore).toBeLessThan(512);
        const both = await Promise.all(
          Array.from({ length: 20 }, (_, i) => fetch(`${i % 2 ? sb.base : sa.base}/env/GREETING`).then((r) => r.text())),
        );
        expect(both).toEqual(Array.from({ length: 20 }, (_, i) => (i % 2 ? "I am b" : "I am a")));
        expect(await stop(a)).toBe(0);
        expect(await (await fetch(`${sb.base}/`)).text()).toBe(HELLO);
      } finally {
        expect(await stop(b)).toBe(0);
      }
      await expectDaemonClean(before);
    },
    T,
  );

  test(
    "shared mode: a spec with a network namespace path: the daemon's socket listens in that namespace (answered inside it), not in the daemon's",
    async () => {
      const netns = `bwhs-${process.pid}`;
      run(["ip", "netns", "add", netns]);
      try {
        run(["ip", "-n", netns, "link", "set", "lo", "up"]);
        const path = `/var/run/netns/${netns}`;
        const id = uid("netns");
        await serve(id, { port: 8080, extra: ["--with-ns", `network:${path}`] });
        try {
          const log = join(logs, `${id}.log`);
          expect(fileText(log)).toContain("bunwasi: serving wasi:http on http://0.0.0.0:8080/");
          // The listening socket on 8080 inside the namespace is one of the daemon's fds.
          const inside = listeningInodes(run(["nsenter", `--net=${path}`, "cat", "/proc/net/tcp"]), 8080);
          expect(inside.length).toBe(1);
          expect(socketInodes(daemon.pid).has(inside[0] as string)).toBe(true);
          // The daemon's own namespace has no listener of it.
          expect(listeningInodes(readFileSync(`/proc/${daemon.pid}/net/tcp`, "utf8"), 8080)).not.toContain(inside[0]);
          const bun = join(REPO, "node_modules/.bin/bun");
          const out = run([
            "nsenter",
            `--net=${path}`,
            bun,
            "-e",
            'process.stdout.write(await (await fetch("http://127.0.0.1:8080/")).text())',
          ]);
          expect(out).toBe(HELLO);
        } finally {
          expect(await stop(id)).toBe(0);
        }
      } finally {
        Bun.spawnSync(["ip", "netns", "del", netns]);
      }
    },
    T,
  );

  test(
    "shared mode: bad settings fail the start with 125 and a clear message: a backlog that is no number, an address in use, a network namespace that does not exist, an unsatisfied import",
    async () => {
      const before = daemonUsage(daemon.pid);
      const busy = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("") });
      try {
        const cases: [string, string[], string[], string][] = [
          [
            "backlog",
            ["--env", `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${freePort()}`, "--env", "WASMTIME_HTTP_PROXY_BACKLOG=many"],
            ["/handler.wasm"],
            "WASMTIME_HTTP_PROXY_BACKLOG=many: want a number",
          ],
          [
            "inuse",
            ["--env", `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${busy.port}`],
            ["/handler.wasm"],
            `bind 127.0.0.1:${busy.port}: Address already in use`,
          ],
          ["nons", ["--with-ns", "network:/var/run/netns/bwhs-none"], ["/handler.wasm"], "network namespace /var/run/netns/bwhs-none: "],
          ["missing", ["--env", `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${freePort()}`], ["/missing.wasm"], "bunwasi:test/missing"],
        ];
        for (const [what, extra, args, message] of cases) {
          const r = await env.run(IMAGE, uid(what), args, { runtime: SHARED_RUNTIME, extra });
          expect(`${what}: ${r.code}`).toBe(`${what}: 125`);
          expect(r.stderr).toContain("bunwasi: wasi:http: ");
          expect(r.stderr).toContain(message);
        }
      } finally {
        busy.stop(true);
      }
      // The listening socket of a service that failed to start is closed too (the link error:
      // the library owned it).
      await expectDaemonClean(before);
    },
    T,
  );

  // Last: it kills the daemon.
  test(
    "shared mode: the daemon killed under a service: containerd reports it exited, delete cleans up, the port is free, a restarted daemon serves it again",
    async () => {
      const id = uid("crash");
      const { port } = await serve(id);
      const events = env.cd.ctrSpawn(["events"]);
      let seen = "";
      const reader = (async () => {
        for await (const chunk of events.stdout) seen += new TextDecoder().decode(chunk);
      })();
      expect(await daemon.stop("SIGKILL")).toBe("SIGKILL");
      // As for any wasm container (shared-fault): containerd runs the thin shim's delete and
      // publishes the exit it answers, killed.
      const exit = new RegExp(`/tasks/exit {[^\n]*"container_id":"${id}"[^\n]*"exit_status":137`);
      await until("the exit published", () => exit.test(seen), 60_000);
      events.kill();
      await reader;
      expect((await env.cd.ctr(["tasks", "ls", "-q"])).stdout.split("\n")).not.toContain(id);
      await ctrOk(["containers", "rm", id]);
      expect(mountsUnder(env.dir)).toEqual([]);
      await daemon.restart();
      const again = uid("again");
      const { base } = await serve(again, { port });
      try {
        expect(await (await fetch(`${base}/`)).text()).toBe(HELLO);
      } finally {
        expect(await stop(again)).toBe(0);
      }
    },
    T,
  );
});

describe("wasi:http services in shared mode through the CRI (crictl, containerd 1.6, handler wasmtimed): pods with a network namespace of their own", () => {
  let dir: string;
  let daemon: Daemon;
  let cri: CriEnv;
  // The CNI bridge on the host (≤ 15 bytes) and the pods' subnet, per run.
  const bridge = `bwh${(process.pid & 0xffffff).toString(16)}`;
  const subnet = `10.250.${process.pid % 250}.0/24`;
  let baseline: { fds: number };

  const service = (name: string, greeting: string) => ({
    metadata: { name },
    image: { image: IMAGE },
    command: ["/handler.wasm"],
    envs: [{ key: "GREETING", value: greeting }],
    log_path: `${name}.log`,
  });

  /** A pod with its own network namespace running the handler; resolves once it serves. */
  async function servePod(name: string, greeting: string) {
    const pod = await cri.runPod(name, { podNetwork: true });
    const id = await cri.createContainer(pod, service(`${name}-svc`, greeting));
    await cri.crictlOk(["start", id]);
    const log = join(pod.logDir, `${name}-svc.log`);
    const up = await waitFile(log, (t) => t.includes("bunwasi: serving wasi:http on http://0.0.0.0:8080/"), 30_000);
    if (!up) throw new Error(`${name} never served; log:\n${fileText(log)}\n--- daemon ---\n${daemon.log().slice(-3000)}`);
    const info = JSON.parse(await cri.crictlOk(["inspectp", "-o", "json", pod.id]));
    const ip: string = info.status.network.ip;
    const netns: string = info.info.runtimeSpec.linux.namespaces.find((n: { type: string }) => n.type === "network").path;
    return { pod, id, log, ip, netns, base: `http://${ip}:8080` };
  }

  beforeAll(async () => {
    buildServices();
    dir = mkdtempSync("/tmp/bwhc-");
    daemon = await startDaemon(join(dir, "d"));
    cri = await criEnv({
      handler: SHARED_HANDLER,
      runtime: SHARED_RUNTIME,
      env: daemon.env,
      // The host takes the gateway address, so the test reaches pod IPs directly.
      cni: bridgeCni(bridge, subnet),
    });
    const r = await cri.cd.ctr(["images", "import", httpImage(dir)], { namespace: K8S_NAMESPACE });
    if (r.code !== 0) throw new Error(`import: ${r.stderr}`);
    await until("the CRI plugin to list the image", async () => (await cri.crictlOk(["images", "-o", "json"])).includes(IMAGE), 20_000);
    // Once first, so the daemon's one-time state (compile thread, library) is in the baseline.
    const warm = await servePod("warm", "warm");
    await cri.crictlOk(["rmp", "-f", warm.pod.id]);
    await until("the warm-up pod's sandbox to close", async () => (await sandboxCount(daemon)) === 0);
    baseline = daemonUsage(daemon.pid);
  }, 1_800_000);

  afterAll(async () => {
    await cri?.stop();
    await daemon?.stop("SIGTERM");
    Bun.spawnSync(["ip", "link", "del", bridge]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, T);

  let a: Awaited<ReturnType<typeof servePod>>;
  let b: Awaited<ReturnType<typeof servePod>>;

  test(
    "two pods, each serving on 0.0.0.0:8080 in its own network namespace, reached at their pod IPs: 50 concurrent requests, 1 MiB echoed, a trap answers 500 and the service keeps serving, guest logs in the CRI log",
    async () => {
      a = await servePod("a", "pod a");
      b = await servePod("b", "pod b");
      expect(a.ip).not.toBe(b.ip);
      expect(a.netns).not.toBe(b.netns);
      // Each pod's listening socket is the daemon's, in that pod's namespace.
      for (const p of [a, b]) {
        const inside = listeningInodes(run(["nsenter", `--net=${p.netns}`, "cat", "/proc/net/tcp"]), 8080);
        expect(inside.length).toBe(1);
        expect(socketInodes(daemon.pid).has(inside[0] as string)).toBe(true);
      }
      expect((await cri.inspect(a.id)).info.pid).toBe(daemon.pid);

      const many = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          fetch(`${i % 2 ? b.base : a.base}/env/GREETING`).then(async (r) => [r.status, await r.text()]),
        ),
      );
      expect(many).toEqual(Array.from({ length: 50 }, (_, i) => [200, i % 2 ? "pod b" : "pod a"]));

      const body = new Uint8Array(1 << 20);
      for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 11)) & 0xff;
      const echo = await fetch(`${a.base}/echo`, { method: "POST", body });
      expect(echo.status).toBe(200);
      expect(Buffer.compare(Buffer.from(await echo.arrayBuffer()), Buffer.from(body))).toBe(0);

      const trap = await fetch(`${b.base}/trap`);
      expect(trap.status).toBe(500);
      await trap.text();
      expect(await (await fetch(`${b.base}/`)).text()).toBe(HELLO);
      expect(await waitFile(b.log, (t) => t.includes("wasm `unreachable` instruction executed"))).toBe(true);

      expect(await (await fetch(`${a.base}/log`)).text()).toBe("logged\n");
      expect(
        await waitFile(a.log, (t) => / stdout F guest says hello on stdout$/m.test(t) && / stderr F guest says hello on stderr$/m.test(t)),
      ).toBe(true);
    },
    T,
  );

  test(
    "crictl stop during a request: the request completes, new connections are refused, the container exits 0 (Completed); the other pod keeps serving",
    async () => {
      const slow = fetch(`${a.base}/sleep/2000`).then(async (r) => [r.status, await r.text()]);
      expect(await waitFile(a.log, (t) => t.includes("guest sleeping"), 20_000)).toBe(true);
      const stopping = cri.crictlOk(["stop", "-t", "60", a.id]);
      expect(await refusedSoon(a.base)).toBe(true);
      expect(await slow).toEqual([200, "slept 2000\n"]);
      await stopping;
      const st = (await cri.waitState(a.id, "CONTAINER_EXITED")).status;
      expect([st.exitCode, st.reason]).toEqual([0, "Completed"]);
      expect(await (await fetch(`${b.base}/`)).text()).toBe(HELLO);
    },
    T,
  );

  test(
    "pods removed: nothing is left: no sandbox in the daemon, no thread of the library, the daemon's fds back, no mount, no state, the pods' namespaces gone",
    async () => {
      for (const p of [a, b]) await cri.crictlOk(["rmp", "-f", p.pod.id]);
      await until("the daemon's sandboxes to close", async () => (await sandboxCount(daemon)) === 0);
      const after = await until("the library's threads to end and the fds to come back", () => {
        const u = daemonUsage(daemon.pid);
        return u.httpThreads === 0 && u.fds <= baseline.fds ? u : undefined;
      });
      expect(after.httpThreads).toBe(0);
      for (const p of [a, b]) {
        expect(existsSync(p.netns)).toBe(false);
        for (const id of [p.pod.id, p.id]) {
          expect(mountsUnder(cri.dir).filter((m) => m.includes(id))).toEqual([]);
          expect(existsSync(join(containerStateDir(K8S_NAMESPACE), id))).toBe(false);
        }
      }
    },
    T,
  );
});
