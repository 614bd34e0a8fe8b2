// Container start, memory and throughput of the wasm shim, against runc running the
// same kind of work natively (busybox, static) in the same run under the same
// containerd. Not a test: prints tables.
//
//   bun bench/shim/run.ts [--runs 10] [--tasks 1000] [--parallel 8] [--idle 20]

import { readdirSync, readFileSync, rmSync } from "node:fs";
import { parseArgs } from "node:util";
import { shimPaths } from "../../src/shim/paths.ts";
import { IMAGES, RUNTIME, type ShimEnv, shimEnv } from "../../test/support/shim-env.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "10" },
    tasks: { type: "string", default: "1000" },
    parallel: { type: "string", default: "8" },
    idle: { type: "string", default: "20" },
  },
});
const RUNS = Number(values.runs);
const TASKS = Number(values.tasks);
const PARALLEL = Number(values.parallel);
const IDLE = Number(values.idle);
const RUNC = "io.containerd.runc.v2";

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
  if (r.code !== 0) throw new Error(`run failed (${r.code}): ${r.stderr}`);
  return ms;
}

const wasmHello = ["/wasi-demo-app.wasm", "echo", "hello"];
const nativeHello = ["echo", "hello"];

async function startTimes(env: ShimEnv) {
  // One of each first: the executor directory and image snapshots are set up once per node.
  await timedRun(env, RUNTIME, IMAGES.demo, wasmHello);
  await timedRun(env, RUNC, IMAGES.busybox, nativeHello);
  const floor: number[] = [];
  const cold: number[] = [];
  const warm: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    floor.push(await timedRun(env, RUNC, IMAGES.busybox, nativeHello));
    rmSync(shimPaths().compileCacheDir, { recursive: true, force: true });
    cold.push(await timedRun(env, RUNTIME, IMAGES.demo, wasmHello));
    warm.push(await timedRun(env, RUNTIME, IMAGES.demo, wasmHello));
  }
  const f = median(floor);
  console.log(`\n### ctr run --rm of a hello (median of ${RUNS})\n`);
  console.log("| what | median ms | ratio to runc floor |\n|---|---:|---:|");
  console.log(`| runc, static busybox echo (floor) | ${f.toFixed(1)} | 1.00 |`);
  console.log(`| wasm, cold (no compile cache) | ${median(cold).toFixed(1)} | ${(median(cold) / f).toFixed(2)} |`);
  console.log(`| wasm, warm (cached) | ${median(warm).toFixed(1)} | ${(median(warm) / f).toFixed(2)} |`);
}

/** Proportional set size of a process, in KiB: its fair share of shared pages. */
function pssKiB(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function pidsMatching(pred: (cmd: string) => boolean): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (pred(readFileSync(`/proc/${d}/cmdline`, "utf8").replaceAll("\0", " "))) out.push(Number(d));
    } catch {}
  }
  return out;
}

async function idleMemory(env: ShimEnv, runtime: string, image: string, args: string[], n: number, label: string) {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = nextId("idle");
    const r = await env.cd.ctr(["run", "-d", "--runtime", runtime, image, id, ...args]);
    if (r.code !== 0) throw new Error(`run -d: ${r.stderr}`);
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
  const shimPss = shims.reduce((a, p) => a + pssKiB(p), 0);
  const initPss = inits.reduce((a, p) => a + pssKiB(p), 0);
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

async function throughput(env: ShimEnv, runtime: string, image: string, args: string[], label: string) {
  let next = 0;
  let failed = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: PARALLEL }, async () => {
      while (next < TASKS) {
        next++;
        const r = await env.run(image, nextId("t"), args, { runtime });
        if (r.code !== 0) failed++;
      }
    }),
  );
  const s = (performance.now() - t0) / 1000;
  console.log(`| ${label} | ${TASKS} | ${PARALLEL} | ${s.toFixed(1)} | ${(TASKS / s).toFixed(1)} | ${failed} |`);
  return TASKS / s;
}

const env = await shimEnv();
try {
  await startTimes(env);
  console.log("\n### Memory of idle running containers (PSS, MiB: shims + container processes)\n");
  console.log("| what | containers | shims | containers' processes | total | per container |\n|---|---:|---:|---:|---:|---:|");
  for (const n of [1, IDLE]) {
    await idleMemory(env, RUNTIME, IMAGES.demo, ["/wasi-demo-app.wasm", "daemon"], n, "wasm daemon (bunwasi)");
    await idleMemory(env, RUNC, IMAGES.busybox, ["sleep", "1000"], n, "busybox sleep (runc)");
  }
  console.log(`\n### Short tasks, ${PARALLEL} at a time\n`);
  console.log("| what | tasks | parallel | seconds | tasks/s | failed |\n|---|---:|---:|---:|---:|---:|");
  const w = await throughput(env, RUNTIME, IMAGES.demo, wasmHello, "wasm echo (bunwasi)");
  const n = await throughput(env, RUNC, IMAGES.busybox, nativeHello, "busybox echo (runc)");
  console.log(`\nwasm/runc throughput ratio: ${(w / n).toFixed(2)}`);
} finally {
  await env.stop();
}
