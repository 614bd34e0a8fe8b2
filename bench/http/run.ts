// wasi:http services: requests/s and p50/p99 latency of one hello handler at 1 and 50
// connections on loopback, for ours (the compiled shim under containerd, `ctr run --net-host`),
// `wasmtime serve` (crate wasmtime-cli 48.0.0, the version of our libwasmtime, built on demand
// into build/bench/) and runwasi's wasmtime shim (../shared/peers/runwasi, under the same
// containerd), in one run. Not a test: prints a table of medians and ratios to `wasmtime serve`.
//
//   bun bench/http/run.ts [--duration 5] [--warmup 1] [--repeat 3] [--conns 1,50]
//                         [--runwasi DIR] [--skip ours,wasmtime,runwasi] [--shared]
//
// --shared adds a row of ours in shared mode: the containerd-wasmtimed daemon (started here)
// serving the handler in-process behind the thin shim; its CPU figure is the daemon's.
//
// All three serve the same component: test/wasm/http/handler.c built against WASI 0.2.6 (the
// newest runwasi's wasmtime 36 links), path "/": "hello from wasi:http". Each answers every
// request from a fresh instance (wasmtime serve's default for WASIp2). The load generator
// (./load.ts) runs in this process on the same 2 cores, the same for every row. `wasmtime serve`
// gets -Scli: the handler imports wasi:cli/environment, which its proxy-only default leaves out.

import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "../../test/support/daemon.ts";
import { REPO, RUNTIME, type ShimEnv, shimEnv } from "../../test/support/shim-env.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { RUNWASI, runwasiDir, runwasiPathDir } from "../shim/peers.ts";
import { type LoadResult, load } from "./load.ts";

const { values } = parseArgs({
  options: {
    duration: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
    repeat: { type: "string", default: "3" },
    conns: { type: "string", default: "1,50" },
    runwasi: { type: "string" },
    skip: { type: "string", default: "" },
    /** Also a row of ours with the pooling allocator off (BUNWASI_HTTP_POOLING=0). */
    "no-pooling": { type: "boolean", default: false },
    /** Also a row of ours in shared mode (the daemon serves it). */
    shared: { type: "boolean", default: false },
  },
});
const DURATION_MS = Number(values.duration) * 1000;
const WARMUP_MS = Number(values.warmup) * 1000;
const REPEAT = Number(values.repeat);
const CONNS = values.conns.split(",").map(Number);
const SKIP = new Set(values.skip.split(",").filter(Boolean));
const RW = runwasiDir(values.runwasi);
const WASI_V = "0.2.6";
const WASMTIME_CLI = "48.0.0";
const IMAGE = "docker.io/library/bunwasi-bench-http:latest";

function sh(cmd: string[], what: string): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "inherit", cwd: REPO });
  if (r.exitCode !== 0) throw new Error(`${what} failed (${r.exitCode})`);
  return r.stdout.toString().trim();
}

/**
 * `wasmtime` from crates.io at our libwasmtime's version, with only what `serve` needs (its
 * serve.rs does not build without component-model-async).
 */
function wasmtimeCli(): string {
  const root = join(REPO, "build/bench/wasmtime-cli");
  const bin = join(root, "bin/wasmtime");
  const v = existsSync(bin) ? Bun.spawnSync([bin, "--version"]).stdout.toString() : "";
  if (!v.includes(WASMTIME_CLI)) {
    console.error(`building wasmtime-cli ${WASMTIME_CLI} (once; many minutes on 2 cores)`);
    sh(
      [
        "nice",
        "-n",
        "10",
        "cargo",
        "install",
        "--quiet",
        "wasmtime-cli",
        "--version",
        `=${WASMTIME_CLI}`,
        "--locked",
        "--no-default-features",
        "--features",
        "run,serve,component-model-async,cranelift,pooling-allocator,parallel-compilation",
        "--root",
        root,
        // Its own lock file (--locked) pins other versions of the shared crates: its own target dir.
        "--target-dir",
        join(REPO, "build/bench/target"),
      ],
      "cargo install wasmtime-cli",
    );
  }
  return bin;
}

function freePort(): number {
  const s = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("") });
  const port = s.port as number;
  s.stop(true);
  return port;
}

async function waitServing(port: number, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/`);
      if ((await r.text()) === "hello from wasi:http\n") return;
    } catch {}
    await Bun.sleep(50);
  }
  throw new Error(`${what} never answered on port ${port}`);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

type Row = { server: string; conns: number; runs: LoadResult[]; cpuUsPerRequest: number[] };
const rows: Row[] = [];

/**
 * Every server is up before the first load and the loads are interleaved (each repeat runs
 * every server once per connection count), so a change in the machine's load hits all of
 * them alike.
 */
async function measureAll(servers: { name: string; port: number; pid: number }[]): Promise<void> {
  for (const s of servers) for (const conns of CONNS) rows.push({ server: s.name, conns, runs: [], cpuUsPerRequest: [] });
  for (let i = 0; i < REPEAT; i++) {
    for (const conns of CONNS) {
      for (const s of servers) {
        const cpu0 = cpuUs(s.pid);
        const r = await load("127.0.0.1", s.port, "/", conns, DURATION_MS, WARMUP_MS);
        const cpu = (cpuUs(s.pid) - cpu0) / Math.max(1, r.total);
        const bad = Object.entries(r.statuses).filter(([st]) => st !== "200");
        if (r.errors || bad.length) console.error(`${s.name} c=${conns}: ${r.errors} errors, statuses ${JSON.stringify(r.statuses)}`);
        const row = rows.find((x) => x.server === s.name && x.conns === conns);
        row?.runs.push(r);
        row?.cpuUsPerRequest.push(cpu);
        console.error(`run ${i + 1}/${REPEAT} ${s.name} c=${conns}: ${r.rps.toFixed(0)} req/s`);
      }
    }
  }
}

/**
 * CPU time (user + system, µs) the server process has used: the process the requests run in
 * (our executor, runwasi's container process, `wasmtime serve`). Per request it is a cost that
 * other load on the machine does not change, unlike requests/s.
 */
function cpuUs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
  const hz = 100; // USER_HZ on Linux
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / hz;
}

async function taskPid(env: ShimEnv, id: string): Promise<number> {
  const ls = (await env.cd.ctr(["task", "ls"])).stdout;
  const pid = Number(
    ls
      .split("\n")
      .find((l) => l.startsWith(`${id} `))
      ?.trim()
      .split(/\s+/)[1],
  );
  if (!(pid > 0)) throw new Error(`no pid for task ${id}`);
  return pid;
}

/** `ctr run -d` of the handler under `runtime`; resolves with its port, pid and a stop function. */
async function viaShim(
  env: ShimEnv,
  server: string,
  runtime: string,
  extraEnv: string[] = [],
): Promise<{ port: number; pid: number; stop: () => Promise<void> }> {
  const id = `bench-http-${server.replace(/\W+/g, "-")}-${process.pid}`;
  const port = freePort();
  const r = await env.cd.ctr([
    "run",
    "-d",
    "--runtime",
    runtime,
    "--net-host",
    "--env",
    `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${port}`,
    ...extraEnv.flatMap((e) => ["--env", e]),
    "--log-uri",
    `file://${join(env.dir, `${id}.log`)}`,
    IMAGE,
    id,
    "/handler.wasm",
  ]);
  if (r.code !== 0) throw new Error(`ctr run (${server}): ${r.stderr}`);
  const stop = async () => {
    await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
    for (let i = 0; i < 100; i++) {
      if ((await env.cd.ctr(["task", "delete", id])).code === 0) break;
      await Bun.sleep(100);
    }
    await env.cd.ctr(["containers", "rm", id]);
  };
  try {
    await waitServing(port, server);
    return { port, pid: await taskPid(env, id), stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function main() {
  sh(["bash", "scripts/http-host.sh"], "http-host.sh");
  const wasmDir = sh(["bash", "scripts/build-http-components.sh", "--wasi", WASI_V], "build-http-components.sh");
  const handler = join(wasmDir, `handler-${WASI_V}.wasm`);
  const wasmtime = SKIP.has("wasmtime") ? "" : wasmtimeCli();
  const servers: { name: string; port: number; pid: number }[] = [];
  const stops: (() => Promise<void>)[] = [];
  const pathDirs = RW && !SKIP.has("runwasi") ? [runwasiPathDir(RW)] : [];
  let env: ShimEnv | undefined;
  let daemon: Daemon | undefined;
  let daemonDir: string | undefined;
  try {
    if (!SKIP.has("wasmtime")) {
      const port = freePort();
      const p = Bun.spawn([wasmtime, "serve", "-Scli", "--addr", `127.0.0.1:${port}`, handler], { stdout: "ignore", stderr: "ignore" });
      stops.push(async () => {
        p.kill("SIGKILL");
        await p.exited;
      });
      await waitServing(port, "wasmtime serve");
      servers.push({ name: "wasmtime serve", port, pid: p.pid });
    }
    if (!SKIP.has("ours") || pathDirs.length) {
      if (values.shared) {
        sh(["bash", "scripts/build-shim.sh"], "build-shim.sh");
        daemonDir = mkdtempSync("/tmp/bwbh-");
        daemon = await startDaemon(daemonDir);
      }
      env = await shimEnv({ path: pathDirs, ...(daemon ? { env: daemon.env } : {}) });
      const archive = join(env.dir, "http.tar");
      writeImageArchive(archive, {
        name: IMAGE,
        files: [{ path: "/handler.wasm", source: handler }],
        config: { entrypoint: ["/handler.wasm"] },
      });
      const r = await env.cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import: ${r.stderr}`);
      if (!SKIP.has("ours")) {
        const s = await viaShim(env, "bunwasi", RUNTIME);
        stops.push(s.stop);
        servers.push({ name: "bunwasi", port: s.port, pid: s.pid });
        if (daemon) {
          const d = await viaShim(env, "bunwasi shared", SHARED_RUNTIME);
          stops.push(d.stop);
          servers.push({ name: "bunwasi shared", port: d.port, pid: d.pid });
        }
        if (values["no-pooling"]) {
          const n = await viaShim(env, "bunwasi no pooling", RUNTIME, ["BUNWASI_HTTP_POOLING=0"]);
          stops.push(n.stop);
          servers.push({ name: "bunwasi no pooling", port: n.port, pid: n.pid });
        }
      }
      if (pathDirs.length) {
        const s = await viaShim(env, "runwasi", RUNWASI);
        stops.push(s.stop);
        servers.push({ name: "runwasi", port: s.port, pid: s.pid });
      } else if (!SKIP.has("runwasi")) console.error("runwasi: not found (../shared/peers/runwasi or --runwasi DIR)");
    }
    await measureAll(servers);
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await env?.stop();
    await daemon?.stop("SIGTERM");
    if (daemonDir) rmSync(daemonDir, { recursive: true, force: true });
    for (const d of pathDirs) rmSync(d, { recursive: true, force: true });
  }

  const base = new Map(rows.filter((r) => r.server === "wasmtime serve").map((r) => [r.conns, median(r.runs.map((x) => x.rps))]));
  console.log(`\nwasi:http hello, loopback, ${REPEAT} runs of ${DURATION_MS / 1000} s each (medians), same component for all`);
  console.log("| server | conns | req/s | p50 ms | p99 ms | server CPU µs/request | req/s vs wasmtime serve |");
  console.log("| --- | --- | --- | --- | --- | --- | --- |");
  for (const r of rows) {
    const rps = median(r.runs.map((x) => x.rps));
    const b = base.get(r.conns);
    console.log(
      `| ${r.server} | ${r.conns} | ${rps.toFixed(0)} | ${median(r.runs.map((x) => x.p50Ms)).toFixed(2)} | ${median(r.runs.map((x) => x.p99Ms)).toFixed(2)} | ${median(r.cpuUsPerRequest).toFixed(0)} | ${b ? `${(rps / b).toFixed(2)}×` : "-"} |`,
    );
  }
}

await main();
