// wasi:http services: requests/s and p50/p99 latency of one hello handler at 1 and 50
// connections on loopback, for ours (the compiled shim under containerd, `ctr run --net-host`),
// `wasmtime serve` (crate wasmtime-cli 48.0.0, the version of our libwasmtime, built on demand
// into build/bench/) and runwasi's wasmtime shim (../shared/peers/runwasi, under the same
// containerd), in one run. Not a test: prints a table of medians and ratios to `wasmtime serve`.
//
//   bun bench/http/run.ts [--duration 5] [--warmup 1] [--repeat 3] [--conns 1,50]
//                         [--runwasi DIR] [--skip ours,wasmtime,runwasi]
//
// All three serve the same component: test/wasm/http/handler.c built against WASI 0.2.6 (the
// newest runwasi's wasmtime 36 links), path "/": "hello from wasi:http". Each answers every
// request from a fresh instance (wasmtime serve's default for WASIp2). The load generator
// (./load.ts) runs in this process on the same 2 cores, the same for every row.

import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
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

/** `wasmtime` from crates.io at our libwasmtime's version, with only what `serve` needs. */
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
        "run,serve,cranelift,pooling-allocator,parallel-compilation",
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

type Row = { server: string; conns: number; runs: LoadResult[] };
const rows: Row[] = [];

async function measure(server: string, port: number): Promise<void> {
  for (const conns of CONNS) {
    const runs: LoadResult[] = [];
    for (let i = 0; i < REPEAT; i++) {
      const r = await load("127.0.0.1", port, "/", conns, DURATION_MS, WARMUP_MS);
      const bad = Object.entries(r.statuses).filter(([s]) => s !== "200");
      if (r.errors || bad.length) console.error(`${server} c=${conns}: ${r.errors} errors, statuses ${JSON.stringify(r.statuses)}`);
      runs.push(r);
    }
    rows.push({ server, conns, runs });
    const m = median(runs.map((r) => r.rps));
    console.error(`${server} c=${conns}: ${m.toFixed(0)} req/s`);
  }
}

async function viaShim(env: ShimEnv, server: string, runtime: string): Promise<void> {
  const id = `bench-http-${server}-${process.pid}`;
  const port = freePort();
  const r = await env.cd.ctr([
    "run",
    "-d",
    "--runtime",
    runtime,
    "--net-host",
    "--env",
    `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${port}`,
    "--log-uri",
    `file://${join(env.dir, `${id}.log`)}`,
    IMAGE,
    id,
    "/handler.wasm",
  ]);
  if (r.code !== 0) throw new Error(`ctr run (${server}): ${r.stderr}`);
  try {
    await waitServing(port, server);
    await measure(server, port);
  } finally {
    await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
    for (let i = 0; i < 100; i++) {
      if ((await env.cd.ctr(["task", "delete", id])).code === 0) break;
      await Bun.sleep(100);
    }
    await env.cd.ctr(["containers", "rm", id]);
  }
}

async function main() {
  sh(["bash", "scripts/http-host.sh"], "http-host.sh");
  const wasmDir = sh(["bash", "scripts/build-http-components.sh", "--wasi", WASI_V], "build-http-components.sh");
  const handler = join(wasmDir, `handler-${WASI_V}.wasm`);
  const wasmtime = SKIP.has("wasmtime") ? "" : wasmtimeCli();

  if (!SKIP.has("wasmtime")) {
    const port = freePort();
    const p = Bun.spawn([wasmtime, "serve", "--addr", `127.0.0.1:${port}`, handler], { stdout: "ignore", stderr: "ignore" });
    try {
      await waitServing(port, "wasmtime serve");
      await measure("wasmtime serve", port);
    } finally {
      p.kill("SIGKILL");
      await p.exited;
    }
  }

  if (!SKIP.has("ours") || (!SKIP.has("runwasi") && RW)) {
    const pathDirs = RW && !SKIP.has("runwasi") ? [runwasiPathDir(RW)] : [];
    const env = await shimEnv({ path: pathDirs });
    try {
      const archive = join(env.dir, "http.tar");
      writeImageArchive(archive, {
        name: IMAGE,
        files: [{ path: "/handler.wasm", source: handler }],
        config: { entrypoint: ["/handler.wasm"] },
      });
      const r = await env.cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import: ${r.stderr}`);
      if (!SKIP.has("ours")) await viaShim(env, "bunwasi", RUNTIME);
      if (RW && !SKIP.has("runwasi")) await viaShim(env, "runwasi", RUNWASI);
      else if (!SKIP.has("runwasi")) console.error("runwasi: not found (../shared/peers/runwasi or --runwasi DIR)");
    } finally {
      await env.stop();
      for (const d of pathDirs) rmSync(d, { recursive: true, force: true });
    }
  }

  const base = new Map(rows.filter((r) => r.server === "wasmtime serve").map((r) => [r.conns, median(r.runs.map((x) => x.rps))]));
  console.log(`\nwasi:http hello, loopback, ${REPEAT} runs of ${DURATION_MS / 1000} s each (medians), same component for all`);
  console.log("| server | conns | req/s | p50 ms | p99 ms | vs wasmtime serve |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const r of rows) {
    const rps = median(r.runs.map((x) => x.rps));
    const b = base.get(r.conns);
    console.log(
      `| ${r.server} | ${r.conns} | ${rps.toFixed(0)} | ${median(r.runs.map((x) => x.p50Ms)).toFixed(2)} | ${median(r.runs.map((x) => x.p99Ms)).toFixed(2)} | ${b ? `${(rps / b).toFixed(2)}×` : "-"} |`,
    );
  }
}

await main();
