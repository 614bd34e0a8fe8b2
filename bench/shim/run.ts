// Container start, memory and throughput of our wasm shim, against peers measured in the
// same run under the same containerd version: runc running the same kind of work natively
// (static busybox: the floor), and runwasi's wasmtime shim (../shared/peers/runwasi,
// unmodified), and our shared mode (one containerd-wasmtimed daemon hosting every wasm
// container, reached through the thin shim). Not a test: prints tables of medians and ratios.
//
//   bun bench/shim/run.ts [--runs 15] [--idle 20] [--stress 300] [--parallel 8]
//                         [--shared-n 20,200,1000] [--create-parallel 4]
//                         [--runwasi DIR] [--skip start,small,component,memory,stress,shared]
//                         [--cold-runs N (component rows; default --runs)]
//                         [--containerd v2.4.2 (a version scripts/containerd-versions.sh built;
//                          default Debian's 1.6)]
//                         [--b OTHER_BUILD/containerd-shim-wasmtime-v1 (start rows of another
//                          build of ours too, e.g. before a change, interleaved with the rest)]
//
// Component rows alone: --skip start,small,memory,stress (add shared to leave shared mode out).
// Start times alone (the demo app and a small C module): --skip component,memory,stress.
//
// Start times and memory run on one containerd that knows every runtime (ours on PATH,
// runwasi's shim linked as containerd-shim-runwasi-v1, the daemon's socket in its env), so
// every row shares the same containerd. The stress test needs its shim under its own name,
// so each shim gets a private containerd of the same binary there.

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { shimPaths } from "../../src/runtime-v2/paths.ts";
import { DAEMON, type Daemon, SHARED_RUNTIME, startDaemon } from "../../test/support/daemon.ts";
import { IMAGES, REPO, RUNTIME, type ShimEnv, shimEnv, WASM } from "../../test/support/shim-env.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { RUNC, RUNWASI, runwasiDir, runwasiPathDir, STRESS_IMAGE, stress, withStressSocket } from "./peers.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "15" },
    idle: { type: "string", default: "20" },
    stress: { type: "string", default: "300" },
    parallel: { type: "string", default: "8" },
    runwasi: { type: "string" },
    skip: { type: "string", default: "" },
    "shared-n": { type: "string", default: "20,200,1000" },
    "create-parallel": { type: "string", default: "4" },
    "cold-runs": { type: "string" },
    containerd: { type: "string" },
    b: { type: "string" },
  },
});
const RUNS = Number(values.runs);
const IDLE = Number(values.idle);
const STRESS = Number(values.stress);
const PARALLEL = Number(values.parallel);
const SKIP = new Set(values.skip.split(",").filter(Boolean));
const RW = runwasiDir(values.runwasi);
/**
 * Another build of ours (--b) for the start rows: containerd runs a runtime given as an
 * absolute path as the shim binary itself, here a link named as our shim (the one binary picks
 * its program by the name it is started as).
 */
const B = values.b ?? null;
const B_RUNTIME = B ? bLink(B) : "";
function bLink(binary: string): string {
  const link = join(mkdtempSync("/tmp/bw-b-"), "containerd-shim-wasmtime-v1");
  symlinkSync(binary, link);
  return link;
}
const SHARED_N = values["shared-n"]
  .split(",")
  .map(Number)
  .filter((n) => n > 0);
const CREATE_PARALLEL = Number(values["create-parallel"]);
const COLD_RUNS = Number(values["cold-runs"] ?? RUNS);
// Every containerd of this run is one binary: Debian's by default, or a built version.
// A built version's bin dir also holds the runc shim of that version, for the runc rows.
const CD_BIN = values.containerd ? join(REPO, "build/containerd", values.containerd, "bin") : "";
if (CD_BIN && !existsSync(join(CD_BIN, "containerd")))
  throw new Error(`${CD_BIN}/containerd not built: bash scripts/containerd-versions.sh ${values.containerd}`);
const withContainerd = (o: Parameters<typeof shimEnv>[0] = {}): Parameters<typeof shimEnv>[0] =>
  CD_BIN ? { ...o, binary: join(CD_BIN, "containerd"), path: [...(o.path ?? []), CD_BIN] } : o;
// Shared mode is measured whenever the daemon is built (scripts/build-shim.sh builds both).
let SHARED = !SKIP.has("shared");

/** Runs fn over items, at most `width` at a time (ctr calls are mostly waiting on containerd). */
async function pool<T>(items: T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
let seq = 0;
const nextId = (p: string) => `${p}-${process.pid}-${seq++}`;

async function timedRun(env: ShimEnv, runtime: string, image: string, args: string[], extra: string[] = []): Promise<number> {
  const t0 = performance.now();
  const r = await env.run(image, nextId("b"), args, { runtime, extra });
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`run (${runtime}) failed (${r.code}): ${r.stderr}`);
  return ms;
}

const wasmHello = ["/wasi-demo-app.wasm", "echo", "hello"];
const nativeHello = ["echo", "hello"];

/** What a start-time table runs in the wasm rows (runc's floor is always busybox's echo). */
interface StartWorkload {
  title: string;
  image: string;
  args: string[];
  /** What the module is, for the row labels. */
  what: string;
  /** More `ctr run` flags, for every row (runc's floor included). */
  extra?: string[];
}

const SMALL_IMAGE = "docker.io/library/bunwasi-bench-small:latest";
/**
 * test/wasm/cat.c: a 17 KiB C module that copies stdin to stdout, run with `--null-io` (all
 * three on /dev/null, in every row) so that it reads EOF and exits 0: without a stdin, runwasi
 * gives the module one that never ends.
 */
const SMALL_MODULE = "cat.wasm";

async function importSmallImage(env: ShimEnv): Promise<void> {
  const archive = join(env.dir, "small.tar");
  writeImageArchive(archive, {
    name: SMALL_IMAGE,
    files: [{ path: `/${SMALL_MODULE}`, source: join(WASM, SMALL_MODULE) }],
    config: { entrypoint: [`/${SMALL_MODULE}`] },
  });
  const imp = await env.cd.ctr(["images", "import", archive]);
  if (imp.code !== 0) throw new Error(`import ${archive}: ${imp.stderr}`);
}

async function startTimes(env: ShimEnv, w: StartWorkload) {
  const wasm = (runtime: string) => timedRun(env, runtime, w.image, w.args, w.extra);
  const floor = () => timedRun(env, RUNC, IMAGES.busybox, nativeHello, w.extra);
  // One of each first: the executor directory and image snapshots are set up once per node.
  await wasm(RUNTIME);
  await floor();
  if (RW) await wasm(RUNWASI);
  if (SHARED) await wasm(SHARED_RUNTIME);
  if (B) await wasm(B_RUNTIME);
  const rows: Record<string, number[]> = { floor: [], cold: [], warm: [], runwasi: [], shared: [], bCold: [], bWarm: [] };
  // Interleaved, so drift in the machine's speed lands on every column alike.
  for (let i = 0; i < RUNS; i++) {
    rows.floor!.push(await floor());
    rmSync(shimPaths().compileCacheDir, { recursive: true, force: true });
    rows.cold!.push(await wasm(RUNTIME));
    rows.warm!.push(await wasm(RUNTIME));
    if (RW) rows.runwasi!.push(await wasm(RUNWASI));
    // Warm only: the daemon compiles a module once and keeps it for its lifetime.
    if (SHARED) rows.shared!.push(await wasm(SHARED_RUNTIME));
    if (B) {
      rmSync(shimPaths().compileCacheDir, { recursive: true, force: true });
      rows.bCold!.push(await wasm(B_RUNTIME));
      rows.bWarm!.push(await wasm(B_RUNTIME));
    }
  }
  const f = median(rows.floor!);
  const rw = RW ? median(rows.runwasi!) : Number.NaN;
  console.log(`\n### ctr run --rm${w.extra?.length ? ` ${w.extra.join(" ")}` : ""} of ${w.title} (median of ${RUNS})\n`);
  console.log("| what | median ms | ÷ runc floor | ÷ runwasi |\n|---|---:|---:|---:|");
  const row = (label: string, ms: number) =>
    console.log(`| ${label} | ${ms.toFixed(1)} | ${(ms / f).toFixed(2)} | ${RW ? (ms / rw).toFixed(2) : "–"} |`);
  row("runc, static busybox echo (floor)", f);
  if (RW) row(`runwasi, ${w.what}`, rw);
  row(`bunwasi, ${w.what}, cold (no compile cache)`, median(rows.cold!));
  row(`bunwasi, ${w.what}, warm (cached)`, median(rows.warm!));
  if (SHARED) row(`bunwasi shared mode, ${w.what} (warm daemon)`, median(rows.shared!));
  if (B) {
    row(`B (${B}), ${w.what}, cold`, median(rows.bCold!));
    row(`B (${B}), ${w.what}, warm`, median(rows.bWarm!));
  }
}

const COMPONENT_IMAGE = "docker.io/library/bunwasi-bench-component:latest";

/**
 * The same echo as a wasi:cli/run component (the demo app wrapped by build-components.sh),
 * kept as a file in a rootfs image, the way runwasi also takes it. runwasi compiles such a
 * file at every start (it precompiles OCI wasm layers only), so it has no cold/warm split.
 */
async function componentTimes(env: ShimEnv) {
  const b = Bun.spawnSync(["bash", join(REPO, "scripts/build-components.sh")], { stdout: "pipe", stderr: "pipe" });
  if (b.exitCode !== 0) throw new Error(`build-components.sh failed: ${b.stderr.toString()}`);
  const archive = join(env.dir, "component.tar");
  writeImageArchive(archive, {
    name: COMPONENT_IMAGE,
    files: [{ path: "/wasi-demo-app.wasm", source: join(WASM, "components/wasi-demo-app.wasm") }],
    config: { entrypoint: ["/wasi-demo-app.wasm"] },
  });
  const imp = await env.cd.ctr(["images", "import", archive]);
  if (imp.code !== 0) throw new Error(`import ${archive}: ${imp.stderr}`);
  const runtimes = [RUNTIME, RUNC, ...(RW ? [RUNWASI] : []), ...(SHARED ? [SHARED_RUNTIME] : [])];
  // One of each first, checking the component really ran: an exit 0 alone would not show it.
  for (const rt of runtimes) {
    const [image, args] = rt === RUNC ? [IMAGES.busybox, nativeHello] : [COMPONENT_IMAGE, wasmHello];
    const r = await env.run(image, nextId("cw"), args, { runtime: rt });
    if (r.code !== 0 || !r.stdout.startsWith("hello\n"))
      throw new Error(`component warm-up (${rt}) exited ${r.code}: ${r.stdout}${r.stderr}`);
  }
  const rows: Record<string, number[]> = { floor: [], cold: [], warm: [], runwasi: [], shared: [] };
  for (let i = 0; i < Math.max(RUNS, COLD_RUNS); i++) {
    if (i < RUNS) rows.floor!.push(await timedRun(env, RUNC, IMAGES.busybox, nativeHello));
    if (i < COLD_RUNS) {
      rmSync(shimPaths().compileCacheDir, { recursive: true, force: true });
      rows.cold!.push(await timedRun(env, RUNTIME, COMPONENT_IMAGE, wasmHello));
    }
    if (i >= RUNS) continue;
    rows.warm!.push(await timedRun(env, RUNTIME, COMPONENT_IMAGE, wasmHello));
    if (RW) rows.runwasi!.push(await timedRun(env, RUNWASI, COMPONENT_IMAGE, wasmHello));
    if (SHARED) rows.shared!.push(await timedRun(env, SHARED_RUNTIME, COMPONENT_IMAGE, wasmHello));
  }
  const f = median(rows.floor!);
  const rw = RW ? median(rows.runwasi!) : Number.NaN;
  console.log(`\n### ctr run --rm of a command component's echo (median of ${RUNS}, cold of ${COLD_RUNS})\n`);
  console.log("| what | median ms | ÷ runc floor | ÷ runwasi |\n|---|---:|---:|---:|");
  const row = (label: string, ms: number) =>
    console.log(`| ${label} | ${ms.toFixed(1)} | ${(ms / f).toFixed(2)} | ${RW ? (ms / rw).toFixed(2) : "–"} |`);
  row("runc, static busybox echo (floor)", f);
  if (RW) row("runwasi, component echo (compiled at each start)", rw);
  row("bunwasi, component echo, cold (no compile cache)", median(rows.cold!));
  row("bunwasi, component echo, warm (cached)", median(rows.warm!));
  if (SHARED) row("bunwasi shared mode, component echo (warm daemon)", median(rows.shared!));
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

async function memory(env: ShimEnv, daemon: Daemon | null) {
  console.log("\n### Memory of idle running containers (PSS, MiB: shims + container processes)\n");
  console.log("| what | containers | shims | containers' processes | total | per container |\n|---|---:|---:|---:|---:|---:|");
  for (const n of [1, IDLE]) {
    await idleMemory(env, RUNC, IMAGES.busybox, ["sleep", "1000"], n, "runc, busybox sleep");
    if (RW) await idleMemory(env, RUNWASI, IMAGES.demo, ["/wasi-demo-app.wasm", "daemon"], n, "runwasi, wasm daemon");
    await idleMemory(env, RUNTIME, IMAGES.demo, ["/wasi-demo-app.wasm", "daemon"], n, "bunwasi, wasm daemon");
  }
  if (daemon) await sharedMemory(env, daemon);
}

const status = (pid: number, key: string) =>
  Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);

/**
 * Shared mode: the containers live in the daemon, so the cost of one more is the daemon's PSS
 * growth ÷ N, plus whatever per-container process is left (the thin shim should have exited
 * after `start`: counted, not assumed). Each N starts from the daemon as the previous left it.
 */
async function sharedMemory(env: ShimEnv, daemon: Daemon) {
  console.log("\n### Shared mode: memory of N idle wasm containers in one daemon (PSS, MiB)\n");
  console.log(
    "| N created | daemon before | daemon with N | growth ÷ N | thin shims alive (PSS) | per container | daemon threads | daemon fds | create s | cleanup s | daemon after cleanup |",
  );
  console.log("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  const failures: string[] = [];
  // The daemon loads its engine on first use: once per daemon whatever N, so not a per-container
  // cost (with --skip start nothing has run in it yet).
  const warm = await env.run(IMAGES.demo, nextId("shwarm"), wasmHello, { runtime: SHARED_RUNTIME });
  if (warm.code !== 0) throw new Error(`warm-up run in the daemon failed (${warm.code}): ${warm.stderr}`);
  for (const n of SHARED_N) {
    await Bun.sleep(1000);
    const before = pssKiB(daemon.pid) / 1024;
    const ids = Array.from({ length: n }, () => nextId("sh"));
    const created: string[] = [];
    let failure = "";
    const t0 = performance.now();
    await pool(ids, CREATE_PARALLEL, async (id) => {
      if (failure) return; // stop creating after the first failure; what was created is measured
      const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, "/wasi-demo-app.wasm", "daemon"]);
      // Created or not, the container may exist: cleanup deletes every id tried.
      created.push(id);
      if (r.code !== 0 && !failure) failure = `ctr run -d #${created.length} (${id}) exited ${r.code}: ${r.stderr.trim().slice(-600)}`;
    });
    const createS = (performance.now() - t0) / 1000;
    await Bun.sleep(2000);
    const alive = daemon.proc.exitCode === null && daemon.proc.signalCode === null;
    const ns = env.cd.namespace;
    const thin = pidsMatching((c) => c.includes(`-namespace ${ns}`) && c.includes("containerd-shim-wasmtimed"));
    const thinPss = thin.reduce((a, p) => a + pssKiB(p), 0) / 1024;
    const withN = alive ? pssKiB(daemon.pid) / 1024 : Number.NaN;
    const threads = alive ? status(daemon.pid, "Threads") : 0;
    const fds = alive ? daemon.fdCount() : 0;
    const t1 = performance.now();
    await pool(created, 8, async (id) => {
      await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
    });
    await Bun.sleep(1000);
    await pool(created, 8, async (id) => {
      await env.cd.ctr(["task", "delete", "--force", id]);
      await env.cd.ctr(["container", "delete", id]);
    });
    const cleanupS = (performance.now() - t1) / 1000;
    await Bun.sleep(1000);
    const after = alive ? pssKiB(daemon.pid) / 1024 : Number.NaN;
    const ok = created.length - (failure ? 1 : 0);
    const growth = (withN - before) / ok;
    console.log(
      `| ${ok}${failure ? ` of ${n}` : ""} | ${before.toFixed(1)} | ${withN.toFixed(1)} | ${growth.toFixed(2)} | ${thin.length} (${thinPss.toFixed(1)}) | ${(growth + thinPss / ok).toFixed(2)} | ${threads} | ${fds} | ${createS.toFixed(1)} | ${cleanupS.toFixed(1)} | ${after.toFixed(1)} |`,
    );
    if (failure) failures.push(`N=${n}: ${failure}${alive ? "" : `; daemon died: ${daemon.log().slice(-1500)}`}`);
    if (!alive) {
      SHARED = false; // nothing left to measure shared mode with
      break;
    }
  }
  for (const f of failures) console.log(`\nFAILED ${f}`);
}

async function stressAll() {
  if (!RW) {
    console.log("\n(runwasi's stress test not found: no throughput table)");
    return;
  }
  console.log(`\n### runwasi's stress test through containerd: ${STRESS} tasks, ${PARALLEL} at a time\n`);
  console.log("| shim | tasks/s | ÷ runwasi |\n|---|---:|---:|");
  const results: [string, number, number][] = [];
  // Ours: a containerd that finds our shim. runwasi's and runc's: one that does not, so the
  // link the stress test makes in /usr/local/bin is the shim containerd runs.
  // --skip stress-normal leaves our normal-mode shim out of this table. A shim that fails or
  // hangs gets a row saying so, and the others are still measured.
  const failed: [string, string][] = [];
  const one = async (name: string, shim: string, opts: Parameters<typeof shimEnv>[0], daemon?: Daemon) => {
    const env = await shimEnv(withContainerd(opts));
    try {
      const r = await withStressSocket(env, () => stress(RW, shim, STRESS, PARALLEL));
      results.push([name, r.tasksPerSecond, r.failed]);
    } catch (e) {
      failed.push([name, (e as Error).message]);
    } finally {
      await env.stop();
      await daemon?.stop("SIGTERM");
      if (daemon) rmSync(dirname(daemon.socket), { recursive: true, force: true });
    }
  };
  if (!SKIP.has("stress-normal")) await one("bunwasi", join(REPO, "build/bin/containerd-shim-wasmtime-v1"), {});
  if (SHARED) {
    // The thin shim under its own name: stress-test derives io.containerd.wasmtimed.v1 from
    // it; containerd (and so the thin shim) gets the daemon's socket in its environment.
    const dir = mkdtempSync("/tmp/bw-stressd-");
    const daemon = await startDaemon(dir);
    await one("bunwasi shared mode", join(REPO, "build/bin/containerd-shim-wasmtimed-v1"), { env: daemon.env }, daemon);
  }
  await one("runwasi", join(RW, "containerd-shim-wasmtime-v1"), { ourShims: false });
  const rw = results.find(([n]) => n === "runwasi")?.[1] ?? Number.NaN;
  for (const [name, tps, bad] of results)
    console.log(
      `| ${name}${bad ? ` (${bad} of ${STRESS} tasks failed: succeeded ÷ wall clock)` : ""} | ${tps.toFixed(1)} | ${(tps / rw).toFixed(2)} |`,
    );
  for (const [name, why] of failed) console.log(`| ${name} | failed | – |\n\n${name}: ${why}`);
  console.log(`\n(stress image: ${STRESS_IMAGE}, args: /wasi-demo-app.wasm echo hello)`);
}

// The daemon is built with the shims: build once (shimEnv builds too, idempotently) to know.
if (SHARED) {
  const b = Bun.spawnSync(["bash", join(REPO, "scripts/build-shim.sh")], { stdout: "pipe", stderr: "pipe" });
  if (b.exitCode !== 0) throw new Error(`build-shim.sh failed: ${b.stderr.toString()}`);
  if (!existsSync(DAEMON)) {
    console.log(`${DAEMON} not built: shared-mode rows are left out`);
    SHARED = false;
  }
}
const daemonDir = SHARED ? mkdtempSync("/tmp/bw-daemon-") : "";
const daemon = SHARED ? await startDaemon(daemonDir) : null;
try {
  const env = await shimEnv(withContainerd({ path: RW ? [runwasiPathDir(RW)] : [], ...(daemon ? { env: daemon.env } : {}) }));
  try {
    if (!RW) console.log("runwasi not found (../shared/peers/runwasi or --runwasi DIR): its rows are left out");
    if (!SKIP.has("start"))
      await startTimes(env, { title: "the demo app's echo", image: IMAGES.demo, args: wasmHello, what: "demo app echo (244 KB)" });
    if (!SKIP.has("small")) {
      await importSmallImage(env);
      await startTimes(env, {
        title: "a small C module",
        image: SMALL_IMAGE,
        args: [`/${SMALL_MODULE}`],
        what: "C cat of /dev/null (17 KB)",
        extra: ["--null-io"],
      });
    }
    if (!SKIP.has("component")) await componentTimes(env);
    if (!SKIP.has("memory")) await memory(env, daemon);
  } finally {
    await env.stop();
  }
} finally {
  await daemon?.stop("SIGTERM");
  if (daemonDir) rmSync(daemonDir, { recursive: true, force: true });
  if (B_RUNTIME) rmSync(dirname(B_RUNTIME), { recursive: true, force: true });
}
if (!SKIP.has("stress")) await stressAll();
