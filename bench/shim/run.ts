// Container start, memory and throughput of our wasm shim, against peers measured in the
// same run under the same containerd version: runc running the same kind of work natively
// (static busybox: the floor), and runwasi's wasmtime shim (../shared/peers/runwasi,
// unmodified). Not a test: prints tables of medians and ratios.
//
//   bun bench/shim/run.ts [--runs 15] [--idle 20] [--stress 300] [--parallel 8]
//                         [--runwasi DIR] [--skip start,memory,stress]
//
// Each peer gets its own private containerd (ours on PATH for ours; runwasi's shim linked
// as containerd-shim-runwasi-v1 for runwasi's), all of the same binary, so no shim is found
// in place of another.

import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { shimPaths } from "../../src/shim/paths.ts";
import { IMAGES, REPO, RUNTIME, type ShimEnv, shimEnv } from "../../test/support/shim-env.ts";
import { RUNC, RUNWASI, runwasiDir, runwasiPathDir, STRESS_IMAGE, stress, withStressSocket } from "./peers.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "15" },
    idle: { type: "string", default: "20" },
    stress: { type: "string", default: "300" },
    parallel: { type: "string", default: "8" },
    runwasi: { type: "string" },
    skip: { type: "string", default: "" },
  },
});
const RUNS = Number(values.runs);
const IDLE = Number(values.idle);
const STRESS = Number(values.stress);
const PARALLEL = Number(values.parallel);
const SKIP = new Set(values.skip.split(",").filter(Boolean));
const RW = runwasiDir(values.runwasi);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
let seq = 0;
const nextId = (p: string) => `${p}-${process.pid}-${seq++}`;

async function timedRun(env: ShimEnv, runtime: string, image: string, args: string[]): Promise<number> {
  const t0 = performance.now();
  const r = await env.run(image, nextId("b"), args, { runtime });
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`run (${runtime}) failed (${r.code}): ${r.stderr}`);
  return ms;
}

const wasmHello = ["/wasi-demo-app.wasm", "echo", "hello"];
const nativeHello = ["echo", "hello"];

async function startTimes(env: ShimEnv) {
  // One of each first: the executor directory and image snapshots are set up once per node.
  await timedRun(env, RUNTIME, IMAGES.demo, wasmHello);
  await timedRun(env, RUNC, IMAGES.busybox, nativeHello);
  if (RW) await timedRun(env, RUNWASI, IMAGES.demo, wasmHello);
  const rows: Record<string, number[]> = { floor: [], cold: [], warm: [], runwasi: [] };
  // Interleaved, so drift in the machine's speed lands on every column alike.
  for (let i = 0; i < RUNS; i++) {
    rows.floor!.push(await timedRun(env, RUNC, IMAGES.busybox, nativeHello));
    rmSync(shimPaths().compileCacheDir, { recursive: true, force: true });
    rows.cold!.push(await timedRun(env, RUNTIME, IMAGES.demo, wasmHello));
    rows.warm!.push(await timedRun(env, RUNTIME, IMAGES.demo, wasmHello));
    if (RW) rows.runwasi!.push(await timedRun(env, RUNWASI, IMAGES.demo, wasmHello));
  }
  const f = median(rows.floor!);
  const rw = RW ? median(rows.runwasi!) : Number.NaN;
  console.log(`\n### ctr run --rm of a hello (median of ${RUNS})\n`);
  console.log("| what | median ms | ÷ runc floor | ÷ runwasi |\n|---|---:|---:|---:|");
  const row = (label: string, ms: number) =>
    console.log(`| ${label} | ${ms.toFixed(1)} | ${(ms / f).toFixed(2)} | ${RW ? (ms / rw).toFixed(2) : "–"} |`);
  row("runc, static busybox echo (floor)", f);
  if (RW) row("runwasi, wasm echo (warm)", rw);
  row("bunwasi, wasm echo, cold (no compile cache)", median(rows.cold!));
  row("bunwasi, wasm echo, warm (cached)", median(rows.warm!));
}

/** Proportional set size of a process, in KiB: its fair share of shared pages. */
function pssKiB(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0; // gone
  }
}

function pidsMatching(pred: (cmd: string) => boolean): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (pred(readFileSync(`/proc/${d}/cmdline`, "utf8").replaceAll("\0", " "))) out.push(Number(d));
    } catch {
      // gone between readdir and read
    }
  }
  return out;
}

/** Every descendant of the container's init (runwasi's wasm runs in a child of its own). */
function withDescendants(pids: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${d}/status`, "utf8"))?.[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
    } catch {
      // gone
    }
  }
  const out = new Set<number>();
  const walk = (p: number) => {
    if (out.has(p)) return;
    out.add(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  for (const p of pids) walk(p);
  return [...out];
}

async function idleMemory(env: ShimEnv, runtime: string, image: string, args: string[], n: number, label: string) {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = nextId("idle");
    const r = await env.cd.ctr(["run", "-d", "--runtime", runtime, image, id, ...args]);
    if (r.code !== 0) throw new Error(`run -d (${runtime}): ${r.stderr}`);
    ids.push(id);
  }
  await Bun.sleep(1500);
  const ns = env.cd.namespace;
  const shims = pidsMatching((c) => c.includes(`-namespace ${ns}`) && c.includes("containerd-shim"));
  const inits: number[] = [];
  for (const id of ids) {
    const ps = await env.cd.ctr(["task", "ps", id]);
    for (const line of ps.stdout.split("\n").slice(1)) {
      const pid = Number(line.trim().split(/\s+/)[0]);
      if (pid) inits.push(pid);
    }
  }
  const shimSet = new Set(shims);
  const containerPids = withDescendants(inits).filter((p) => !shimSet.has(p));
  const shimPss = shims.reduce((a, p) => a + pssKiB(p), 0);
  const initPss = containerPids.reduce((a, p) => a + pssKiB(p), 0);
  for (const id of ids) await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
  await Bun.sleep(500);
  for (const id of ids) {
    await env.cd.ctr(["task", "delete", id]);
    await env.cd.ctr(["container", "delete", id]);
  }
  const total = (shimPss + initPss) / 1024;
  console.log(
    `| ${label} | ${n} | ${(shimPss / 1024).toFixed(1)} | ${(initPss / 1024).toFixed(1)} | ${total.toFixed(1)} | ${(total / n).toFixed(1)} |`,
  );
}

async function memory(env: ShimEnv) {
  console.log("\n### Memory of idle running containers (PSS, MiB: shims + container processes)\n");
  console.log("| what | containers | shims | containers' processes | total | per container |\n|---|---:|---:|---:|---:|---:|");
  for (const n of [1, IDLE]) {
    await idleMemory(env, RUNC, IMAGES.busybox, ["sleep", "1000"], n, "runc, busybox sleep");
    if (RW) await idleMemory(env, RUNWASI, IMAGES.demo, ["/wasi-demo-app.wasm", "daemon"], n, "runwasi, wasm daemon");
    await idleMemory(env, RUNTIME, IMAGES.demo, ["/wasi-demo-app.wasm", "daemon"], n, "bunwasi, wasm daemon");
  }
}

async function stressAll() {
  if (!RW) {
    console.log("\n(runwasi's stress test not found: no throughput table)");
    return;
  }
  console.log(`\n### runwasi's stress test through containerd: ${STRESS} tasks, ${PARALLEL} at a time\n`);
  console.log("| shim | tasks/s | ÷ runwasi |\n|---|---:|---:|");
  const results: [string, number][] = [];
  // Ours: a containerd that finds our shim. runwasi's and runc's: one that does not, so the
  // link the stress test makes in /usr/local/bin is the shim containerd runs.
  const ours = await shimEnv();
  try {
    const r = await withStressSocket(ours, () => stress(RW, join(REPO, "build/bin/containerd-shim-wasmtime-v1"), STRESS, PARALLEL));
    results.push(["bunwasi", r.tasksPerSecond]);
  } finally {
    await ours.stop();
  }
  const theirs = await shimEnv({ ourShims: false });
  try {
    const r = await withStressSocket(theirs, () => stress(RW, join(RW, "containerd-shim-wasmtime-v1"), STRESS, PARALLEL));
    results.push(["runwasi", r.tasksPerSecond]);
  } finally {
    await theirs.stop();
  }
  const rw = results.find(([n]) => n === "runwasi")![1];
  for (const [name, tps] of results) console.log(`| ${name} | ${tps.toFixed(1)} | ${(tps / rw).toFixed(2)} |`);
  console.log(`\n(stress image: ${STRESS_IMAGE}, args: /wasi-demo-app.wasm echo hello)`);
}

const env = await shimEnv({ path: RW ? [runwasiPathDir(RW)] : [] });
try {
  if (!RW) console.log("runwasi not found (../shared/peers/runwasi or --runwasi DIR): its rows are left out");
  if (!SKIP.has("start")) await startTimes(env);
  if (!SKIP.has("memory")) await memory(env);
} finally {
  await env.stop();
}
if (!SKIP.has("stress")) await stressAll();
