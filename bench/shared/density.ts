// Density (issue 17 item 1): N idle containers on one private containerd, for shared mode (the
// daemon), normal mode, runc running a native idle process (busybox sleep) and runwasi, each
// ramped to N or as far as this machine's memory and the time budget let it. Not a test:
// prints one table. Needs root, containerd and runc.
//
//   bun bench/shared/density.ts [--n 1000] [--parallel 8,32] [--peers shared,normal,runc,runwasi]
//                               [--containerd v2.4.2] [--runwasi DIR] [--kill-sample 100|all]
//                               [--kill-parallel 1] [--fd-budget N]
//                               [--batch 100] [--min-free-gib 5] [--ramp-minutes 30]
//                               [--delete-minutes 30] [--env K=V]… [--smaps DIR]
//
// Per peer and per parallelism: the containers are created and started with `ctr run -d` in
// batches (`--batch`), `--parallel` at a time; the rate is the median over batches. Before each
// batch the machine's MemAvailable is checked: a ramp stops when the next batch would leave less
// than --min-free-gib, or after --ramp-minutes, and the row says where. At the end of the first
// ramp of a peer: PSS per idle container (shared: the daemons' growth ÷ N plus any thin shim
// left; the others: the PSS of every per-container process, shims and what runs in the
// container), then kill latency over a sample (`ctr task kill -s SIGKILL`, one at a time, until
// containerd's /tasks/exit event; `--kill-sample all --kill-parallel 8`: every container, 8
// kills at a time), then the time to delete all (`ctr task delete --force` and
// `ctr container delete`, 25 ids per call, 8 calls at a time). The ctr row is what `ctr
// version` (one gRPC round trip) costs at the same parallelism: the ceiling any runtime's rate
// meets through ctr.
//
// Shared mode may run in several daemons: one that nears its fd budget (the daemon's default,
// or --fd-budget) hands the new pods to a successor (src/daemon/overflow.ts). Its figures (PSS, threads, fds) are of all the daemons of
// the run's socket directory summed, and the row says how many there were. containerd holds fds
// per container too (3 in shared mode: its connection to the sandbox and the shim log fifo
// `<bundle>/log`, opened twice; the daemon's events connection is one for all) and it is one process: a ramp also stops when the next batch would
// leave containerd less than a batch's worth below its open-file limit.

import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { liveDaemons as daemonsOf, processStart } from "../../src/daemon/daemon-files.ts";
import { GAVE_BACK } from "../../src/daemon/give-back.ts";
import { containersFor } from "../../src/daemon/nofile.ts";
import { getrlimit, RLIMIT_NOFILE, setrlimit, strerror } from "../../src/linux/libc.ts";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "../../test/support/daemon.ts";
import { chunks, pool } from "../../test/support/ramp.ts";
import { IMAGES, REPO, RUNTIME, type ShimEnv, shimEnv } from "../../test/support/shim-env.ts";
import { RUNC, RUNWASI, runwasiDir, runwasiPathDir } from "../shim/peers.ts";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "1000" },
    parallel: { type: "string", default: "8,32" },
    peers: { type: "string", default: "shared,normal,runc,runwasi" },
    containerd: { type: "string" },
    runwasi: { type: "string" },
    "kill-sample": { type: "string", default: "100" },
    "kill-parallel": { type: "string", default: "1" },
    "fd-budget": { type: "string" },
    batch: { type: "string", default: "100" },
    "min-free-gib": { type: "string", default: "5" },
    "ramp-minutes": { type: "string", default: "30" },
    "delete-minutes": { type: "string", default: "30" },
    // Variables for the daemon (MIMALLOC_…=…): a hypothesis tested without a rebuild. The daemon
    // re-executes itself with its own settings (src/common/vm-env.ts) only where these set none.
    env: { type: "string", multiple: true, default: [] },
    // The daemon's /proc/PID/smaps at its start figure and its after figure, kept in DIR as
    // start.smaps and after.smaps: bench/shared/smaps-diff.ts says what grew, mapping by mapping.
    smaps: { type: "string" },
  },
});
const N = Number(values.n);
const WIDTHS = values.parallel
  .split(",")
  .map(Number)
  .filter((p) => p > 0);
const KILL_ALL = values["kill-sample"] === "all";
const KILL_SAMPLE = KILL_ALL ? Number.POSITIVE_INFINITY : Number(values["kill-sample"]);
const KILL_PARALLEL = Number(values["kill-parallel"]);
const BATCH = Number(values.batch);
const MIN_FREE_KIB = Number(values["min-free-gib"]) * 1024 * 1024;
const RAMP_MS = Number(values["ramp-minutes"]) * 60_000;
const DELETE_MS = Number(values["delete-minutes"]) * 60_000;
const RW = runwasiDir(values.runwasi);
const DAEMON_ENV = Object.fromEntries(values.env.map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
const CD_BIN = values.containerd ? join(REPO, "build/containerd", values.containerd, "bin") : "";
if (CD_BIN && !existsSync(join(CD_BIN, "containerd")))
  throw new Error(`${CD_BIN}/containerd not built: bash scripts/containerd-versions.sh ${values.containerd}`);

interface Peer {
  name: string;
  runtime: string;
  image: string;
  args: string[];
}
const IDLE_WASM = ["/wasi-demo-app.wasm", "sleep", "36000000"];
const ALL_PEERS: Record<string, Peer> = {
  shared: { name: "bunwasi shared mode", runtime: SHARED_RUNTIME, image: IMAGES.demo, args: IDLE_WASM },
  normal: { name: "bunwasi normal mode", runtime: RUNTIME, image: IMAGES.demo, args: IDLE_WASM },
  runc: { name: "runc, busybox sleep (native)", runtime: RUNC, image: IMAGES.busybox, args: ["sleep", "36000"] },
  runwasi: { name: "runwasi (wasmtime shim)", runtime: RUNWASI, image: IMAGES.demo, args: IDLE_WASM },
};
const PEERS = values.peers.split(",").map((p) => {
  const peer = ALL_PEERS[p];
  if (!peer) throw new Error(`unknown peer ${p}: one of ${Object.keys(ALL_PEERS).join(", ")}`);
  return p;
});
if (PEERS.includes("runwasi") && !RW) throw new Error("runwasi not found (../shared/peers/runwasi or --runwasi DIR)");

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]! : Number.NaN;
};

const memAvailableKiB = () => Number(/^MemAvailable:\s+(\d+)/m.exec(readFileSync("/proc/meminfo", "utf8"))?.[1] ?? 0);
const gib = (kib: number) => (kib / 1024 / 1024).toFixed(1);

/** The first daemon's give-back passes that found nothing left to serve. */
const emptyPasses = () =>
  (daemon?.log() ?? "").split("\n").filter((l) => l.includes(GAVE_BACK) && l.includes(" 0 sandboxes, 0 wasm runs, 0 run threads")).length;

/** The first daemon's smaps as `<--smaps>/<label>.smaps`, with --smaps. */
function keepSmaps(label: string): void {
  if (!values.smaps || !daemon) return;
  mkdirSync(values.smaps, { recursive: true });
  writeFileSync(join(values.smaps, `${label}.smaps`), readFileSync(`/proc/${daemon.pid}/smaps`));
}

/**
 * A process's anonymous PSS plus its file RSS, in KiB (0 once it is gone): its PSS with each
 * resident file page counted whole. PSS splits a file page among the processes mapping it, and
 * every daemon, shim and executor on the machine maps libwasmtime.so (and ours the binary): the
 * daemon's PSS moves by tens of MiB with what else runs, this does not.
 */
function wholeKiB(pid: number): number {
  try {
    const t = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const kib = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+)`, "m").exec(t)?.[1] ?? 0);
    return kib("Rss") - kib("Anonymous") + kib("Pss_Anon");
  } catch {
    return 0;
  }
}

/** PSS of a process in KiB (0 once it is gone). */
function pssKiB(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}
const threadsOf = (pid: number) => (existsSync(`/proc/${pid}`) ? readdirSync(`/proc/${pid}/task`).length : 0);
const fdsOf = (pid: number) => (existsSync(`/proc/${pid}`) ? readdirSync(`/proc/${pid}/fd`).length : 0);

/** Every process as pid → [ppid, cmdline]. */
function processTable(): Map<number, [number, string]> {
  const out = new Map<number, [number, string]>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${d}/status`, "utf8"))?.[1]);
      out.set(Number(d), [ppid, readFileSync(`/proc/${d}/cmdline`, "utf8").replaceAll("\0", " ")]);
    } catch {
      // gone between readdir and read
    }
  }
  return out;
}

// Room for the fds N containers need in the daemon (17 each, src/daemon/nofile.ts) and in
// containerd: root may raise its hard limit, and both inherit it from us. Where it cannot, the
// daemon overflows into successors; containerd cannot.
{
  const want = BigInt(Math.max(65_536, N * 16 + 4096));
  const lim = getrlimit(RLIMIT_NOFILE);
  if (!("errno" in lim) && lim.hard < want) {
    const [r, e] = setrlimit(RLIMIT_NOFILE, want, want);
    if (r !== 0)
      console.log(
        `(RLIMIT_NOFILE stays at ${lim.hard}: raising it to ${want} failed, ${strerror(e)} (no CAP_SYS_RESOURCE?); ` +
          `that is room for about ${containersFor(lim.hard)} containers per daemon (then a successor takes the new ones) and about ${Math.floor(Number(lim.hard) / 3)} in containerd, 3 fds each)`,
      );
  }
}

const dir = mkdtempSync("/tmp/bwd-");
const daemonDir = join(dir, "d");
const daemon: Daemon | null = PEERS.includes("shared")
  ? await startDaemon(daemonDir, DAEMON_ENV, values["fd-budget"] ? ["--fd-budget", values["fd-budget"]] : [])
  : null;
const env: ShimEnv = await shimEnv({
  dir: join(dir, basename(dir)),
  path: RW ? [runwasiPathDir(RW)] : [],
  ...(CD_BIN ? { binary: join(CD_BIN, "containerd") } : {}),
  ...(daemon ? { env: daemon.env } : {}),
});
const ns = env.cd.namespace;
const cdVersion = (await env.cd.ctr(["version"])).stdout.match(/Server:[\s\S]*?Version:\s+(\S+)/)?.[1] ?? "?";

/** Every daemon of the run's socket directory seen so far (the first, then the successors of overflows). */
const daemonsSeen = new Set<number>(daemon ? [daemon.pid] : []);
/** The live daemons of the run (not zombies: one that exited is no figure of the row's). */
function liveDaemons(): number[] {
  if (!daemon) return [];
  const live = daemonsOf(daemon.socket).filter((p) => processStart(p) !== undefined);
  for (const p of live) daemonsSeen.add(p);
  return live;
}
/** A figure of all the live daemons, summed. */
const allDaemons = (f: (pid: number) => number) => liveDaemons().reduce((a, p) => a + f(p), 0);

/** containerd's soft open-file limit (its /proc/<pid>/limits). */
function containerdNofile(): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${env.cd.pid}/limits`, "utf8"));
  return !m || m[1] === "unlimited" ? Number.POSITIVE_INFINITY : Number(m[1]);
}

/** Mount points of this run: containers' rootfs (named by the namespace) and the daemon's views. */
const mounts = () =>
  readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m.includes(ns) || m.startsWith(dir)).length;

/** containerd's /tasks/exit events: when each container's was read. */
const events = env.cd.watchExits();
/** When the exit event of `id` was read (performance.now()), looked for every 5 ms. */
async function exitOf(id: string, timeoutMs = 30_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const at = events.seenAt.get(id);
    if (at !== undefined) return at;
    if (Date.now() > deadline) throw new Error(`no exit event for ${id} in ${timeoutMs} ms`);
    await Bun.sleep(5);
  }
}

async function ctrOk(args: string[], timeoutMs = 120_000): Promise<string> {
  const r = await env.cd.ctr(args, { timeoutMs });
  if (r.code !== 0) throw new Error(`ctr ${args.slice(0, 4).join(" ")} … → ${r.code}: ${r.stderr.trim().slice(-600)}`);
  return r.stdout;
}
async function taskList(): Promise<Map<string, { pid: number; status: string }>> {
  const m = new Map<string, { pid: number; status: string }>();
  for (const line of (await ctrOk(["task", "ls"])).split("\n").slice(1)) {
    const [id, pid, status] = line.trim().split(/\s+/);
    if (id && pid && status) m.set(id, { pid: Number(pid), status });
  }
  return m;
}
async function until(what: string, f: () => boolean | Promise<boolean>, timeoutMs = 300_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > deadline) {
      console.log(`(timed out waiting for ${what})`);
      return false;
    }
    await Bun.sleep(200);
  }
  return true;
}

/** Processes that exist per container: shims of this namespace, and what runs in the containers. */
function perContainerProcesses(inits: number[]): number[] {
  const table = processTable();
  const shims = [...table].filter(([, [, c]]) => c.includes(`-namespace ${ns}`) && c.includes("containerd-shim")).map(([p]) => p);
  const children = new Map<number, number[]>();
  for (const [pid, [ppid]] of table) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  const out = new Set<number>(shims);
  const walk = (p: number) => {
    if (out.has(p) || !table.has(p)) return;
    out.add(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  for (const p of inits) walk(p);
  for (const d of daemonsSeen) out.delete(d);
  return [...out];
}

let seq = 0;
/**
 * SIGINT/SIGTERM: the ramp under way stops (and says so), later peers are left out, what was
 * created is deleted, and the table of what was measured is printed.
 */
let interrupted = false;
for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.on(sig, () => {
    interrupted = true;
    process.stderr.write(`(${sig}: stopping after this step)\n`);
  });

interface Ramp {
  width: number;
  reached: number;
  ratePerS: number;
  /** Every batch's rate, in order: the first and last show how the rate changes with N. */
  rates: number[];
  stopped: string;
  ids: string[];
}

/** Creates and starts up to N containers of `peer`, `width` at a time, in batches; stops on memory, time or a failure. */
async function ramp(peer: Peer, width: number): Promise<Ramp> {
  const ids: string[] = [];
  const rates: number[] = [];
  const t0 = Date.now();
  let stopped = "";
  let perContainerKiB = 0;
  const cdFds0 = fdsOf(env.cd.pid);
  const cdLimit = containerdNofile();
  /** `ctr run -d` calls that succeeded: calls already in flight when one fails may still succeed. */
  let started = 0;
  while (ids.length < N && !stopped) {
    const size = Math.min(BATCH, N - ids.length);
    const avail = memAvailableKiB();
    if (avail - size * perContainerKiB < MIN_FREE_KIB) {
      stopped = `memory: ${gib(avail)} GiB available, the next ${size} would leave less than ${values["min-free-gib"]}`;
      break;
    }
    if (interrupted) {
      stopped = "interrupted";
      break;
    }
    // containerd's fds per container so far (3 in shared mode): the next batch must fit below its limit.
    const cdFds = fdsOf(env.cd.pid);
    const cdPer = ids.length > 0 ? Math.max(1, (cdFds - cdFds0) / ids.length) : 3;
    if (cdFds + size * cdPer + 256 > cdLimit) {
      stopped = `containerd's open-file limit: it holds ${cdFds} of ${cdLimit} fds (${cdPer.toFixed(1)} per container); the next ${size} would leave it fewer than 256 spare`;
      break;
    }
    if (Date.now() - t0 > RAMP_MS) {
      stopped = `time: ${values["ramp-minutes"]} min`;
      break;
    }
    const batch = Array.from({ length: size }, () => `dn${seq++}-${process.pid}`);
    const b0 = performance.now();
    await pool(batch, width, async (id) => {
      if (stopped) return;
      const r = await env.cd.ctr(["run", "-d", "--runtime", peer.runtime, peer.image, id, ...peer.args], { timeoutMs: 120_000 });
      ids.push(id); // created or not, it may exist: deleted with the rest
      if (r.code === 0) started++;
      if (r.code !== 0 && !stopped) stopped = `ctr run -d #${ids.length} failed (${r.code}): ${r.stderr.trim().slice(-400)}`;
    });
    const seconds = (performance.now() - b0) / 1000;
    if (!stopped) rates.push(size / seconds);
    perContainerKiB = Math.max(perContainerKiB, (avail - memAvailableKiB()) / size);
    process.stderr.write(
      `  ${peer.name} @${width}: ${ids.length} (${(size / seconds).toFixed(1)}/s, ${gib(memAvailableKiB())} GiB available)\n`,
    );
  }
  return { width, reached: started, ratePerS: median(rates), rates, stopped, ids };
}

/** Kill → exit event of `sample` containers (every one with --kill-sample all), --kill-parallel at a time, in ms. */
async function killLatencies(ids: string[]): Promise<number[]> {
  const step = KILL_ALL ? 1 : Math.max(1, Math.floor(ids.length / KILL_SAMPLE));
  const sample = ids.filter((_, i) => i % step === 0).slice(0, KILL_SAMPLE);
  const out: number[] = [];
  let failed = 0;
  await pool(sample, KILL_PARALLEL, async (id) => {
    if (failed >= 3) return; // a runtime that stopped answering: the sample ends here
    const t0 = performance.now();
    const seen = exitOf(id);
    try {
      await ctrOk(["task", "kill", "-s", "SIGKILL", id]);
      out.push((await seen) - t0);
    } catch (e) {
      seen.catch(() => {});
      console.log(`(kill of ${id}: ${(e as Error).message})`);
      failed++;
    }
  });
  return out;
}

/**
 * Deletes every task and container of ids (25 per ctr call, 8 calls at a time); seconds. A
 * runtime that stops answering (e.g. out of fds) would keep this going for hours: after
 * --delete-minutes it gives up and says so (the rest is left to containerd's teardown, and the
 * row's after-figures then count it).
 */
async function deleteAll(ids: string[], note: (s: string) => void): Promise<number> {
  const t0 = performance.now();
  const deadline = Date.now() + DELETE_MS;
  let left = 0;
  await pool(chunks(ids, 25), 8, async (some) => {
    if (Date.now() > deadline) {
      left += some.length;
      return;
    }
    await env.cd.ctr(["task", "delete", "--force", ...some], { timeoutMs: 300_000 });
    await env.cd.ctr(["container", "delete", ...some], { timeoutMs: 300_000 });
  });
  if (left) note(`delete gave up after ${values["delete-minutes"]} min with ${left} not tried`);
  return (performance.now() - t0) / 1000;
}

interface Row {
  peer: Peer;
  ramps: Ramp[];
  pssPerContainerMiB: number;
  killMs: number[];
  deleteS: number[];
  daemonPss: [number, number];
  /** The same with each resident page counted whole (see wholeKiB). */
  daemonWhole: [number, number];
  threads: [number, number, number];
  fds: [number, number, number];
  cdFds: [number, number, number];
  mounts: [number, number, number];
  procs: [number, number];
  /** Daemons (shared mode): live ones at the start, at N, after. */
  daemons: [number, number, number];
  note: string;
}

async function measure(key: string): Promise<Row> {
  const peer = ALL_PEERS[key]!;
  const isShared = peer.runtime === SHARED_RUNTIME;
  // One run first: the image's snapshot, the engine (shared: loaded once per daemon), the compile.
  const warm = await env.run(peer.image, `dwarm${seq++}`, peer.args[0] === "sleep" ? ["true"] : ["/wasi-demo-app.wasm", "echo", "x"], {
    runtime: peer.runtime,
  });
  if (warm.code !== 0) throw new Error(`warm-up (${peer.runtime}) exited ${warm.code}: ${warm.stderr}`);
  await Bun.sleep(1000);
  const daemonsPss = () => allDaemons(pssKiB);
  if (isShared) keepSmaps("start");
  const row: Row = {
    peer,
    ramps: [],
    pssPerContainerMiB: Number.NaN,
    killMs: [],
    deleteS: [],
    daemonPss: [daemonsPss() / 1024, Number.NaN],
    daemonWhole: [allDaemons(wholeKiB) / 1024, Number.NaN],
    threads: [allDaemons(threadsOf), 0, 0],
    fds: [allDaemons(fdsOf), 0, 0],
    cdFds: [fdsOf(env.cd.pid), 0, 0],
    mounts: [mounts(), 0, 0],
    procs: [0, 0],
    daemons: [liveDaemons().length, 0, 0],
    note: "",
  };
  let passesBefore = 0;
  for (const width of WIDTHS) {
    const first = row.ramps.length === 0;
    const daemonBefore = daemonsPss();
    const r = await ramp(peer, width);
    row.ramps.push(r);
    if (r.stopped) row.note += `${row.note ? "; " : ""}@${width} stopped at ${r.reached}: ${r.stopped}`;
    await Bun.sleep(2000);
    if (first) {
      const tasks = await taskList();
      const inits = isShared ? [] : r.ids.map((id) => tasks.get(id)?.pid ?? 0).filter((p) => p > 0);
      const procs = perContainerProcesses(inits);
      const procKiB = procs.reduce((a, p) => a + pssKiB(p), 0);
      const n = r.reached || 1;
      row.pssPerContainerMiB = ((isShared ? daemonsPss() - daemonBefore : 0) + procKiB) / 1024 / n;
      row.daemons[1] = liveDaemons().length;
      row.procs[0] = procs.length;
      row.threads[1] = allDaemons(threadsOf);
      row.fds[1] = allDaemons(fdsOf);
      row.cdFds[1] = fdsOf(env.cd.pid);
      row.mounts[1] = mounts();
      const running = r.ids.filter((id) => tasks.get(id)?.status === "RUNNING");
      if (running.length < r.reached) row.note += `${row.note ? "; " : ""}only ${running.length} of ${r.reached} RUNNING`;
      row.killMs = await killLatencies(running);
    }
    passesBefore = emptyPasses();
    row.deleteS.push(await deleteAll(r.ids, (s) => (row.note += `${row.note ? "; " : ""}${s}`)));
    await until(`${peer.name}: no task or container left`, async () => (await ctrOk(["container", "ls", "-q"])).trim() === "");
  }
  // Settled: every sandbox closed (the full daemons of an overflow exit with their last), the
  // daemon's deferred clean-up done.
  if (daemon) {
    await until("the full daemons to exit", () => liveDaemons().length <= 1);
    await until("the daemon's sandboxes to close", async () => {
      const { client, manager } = await daemon.manager();
      try {
        return (await manager.listSandboxes({})).sandboxes.length === 0;
      } finally {
        client.close();
      }
    });
  }
  await until(`${peer.name}: per-container processes to go`, () => perContainerProcesses([]).length === 0, 60_000);
  // A run thread may take a moment to end after its sandbox closed: up to a minute for the
  // daemon's threads to come back, then whatever they are is the row's figure.
  if (daemon) await until("the daemon's threads to come back", () => allDaemons(threadsOf) <= row.threads[0] + 2, 60_000);
  // And the daemon's give-back pass once nothing is left to serve (src/daemon/give-back.ts: it
  // follows the last run thread's end): the after figure is what the daemon keeps, not what it
  // has yet to give back.
  if (daemon) await until("the daemon's give-back pass with nothing left", () => emptyPasses() > passesBefore, 60_000);
  await Bun.sleep(3000);
  row.daemonPss[1] = daemonsPss() / 1024;
  row.daemonWhole[1] = allDaemons(wholeKiB) / 1024;
  if (isShared) keepSmaps("after");
  row.threads[2] = allDaemons(threadsOf);
  row.fds[2] = allDaemons(fdsOf);
  row.daemons[2] = liveDaemons().length;
  row.cdFds[2] = fdsOf(env.cd.pid);
  row.mounts[2] = mounts();
  row.procs[1] = perContainerProcesses([]).length;
  return row;
}

// What ctr itself costs: `ctr version` at the same parallelisms, the ceiling any row meets.
async function ctrFloor(width: number): Promise<number> {
  const n = 200;
  const t0 = performance.now();
  await pool(
    Array.from({ length: n }, (_, i) => i),
    width,
    async () => {
      await ctrOk(["version"]);
    },
  );
  return n / ((performance.now() - t0) / 1000);
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "–");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "–");
const arrow = (xs: number[]) => xs.join(" → ");

/** One peer's row of the table; the ratios need runc's row. */
function formatRow(r: Row, runc?: Row): string {
  const isShared = r.peer.runtime === SHARED_RUNTIME;
  const change = ([a, b]: [number, number]) => {
    const pct = ((b - a) / a) * 100;
    return `${f1(a)} → ${f1(b)} (${pct >= 0 ? "+" : ""}${pct.toFixed(0)}%)`;
  };
  return `| ${r.peer.name} | ${r.ramps.map((x) => x.reached).join(" / ")} | ${r.ramps.map((x) => `${f1(x.ratePerS)} (${f1(x.rates[0] ?? Number.NaN)} → ${f1(x.rates.at(-1) ?? Number.NaN)})`).join(" | ")} | ${runc ? f2(r.ramps[0]!.ratePerS / runc.ramps[0]!.ratePerS) : "–"} | ${f2(r.pssPerContainerMiB)} | ${runc ? f2(r.pssPerContainerMiB / runc.pssPerContainerMiB) : "–"} | ${f1(median(r.killMs))} / ${f1(quantile(r.killMs, 0.99))} / ${f1(Math.max(...r.killMs))} (${r.killMs.filter((ms) => ms > 1000).length} of ${r.killMs.length} over 1 s) | ${r.deleteS.map(f1).join(" / ")} | ${isShared ? `${change(r.daemonPss)}; whole ${change(r.daemonWhole)}` : "–"} | ${isShared ? arrow(r.daemons) : "–"} | ${isShared ? arrow(r.threads) : "–"} | ${isShared ? arrow(r.fds) : "–"} | ${arrow(r.cdFds)} | ${arrow(r.mounts)} | ${r.procs.join(" → ")} |`;
}

const rows: Row[] = [];
const floors: number[] = [];
const started = new Date();
try {
  for (const w of WIDTHS) floors.push(await ctrFloor(w));
  for (const key of PEERS) {
    if (interrupted) break;
    const avail = memAvailableKiB();
    if (avail < MIN_FREE_KIB) {
      console.log(`(${key} left out: ${gib(avail)} GiB available)`);
      continue;
    }
    process.stderr.write(`${ALL_PEERS[key]!.name}…\n`);
    const row = await measure(key);
    rows.push(row);
    // Kept as it comes (ratios need runc's row): a run cut short still leaves its figures.
    process.stderr.write(`${formatRow(row)}\n`);
  }
} finally {
  events.stop();
  const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  const runc = rows.find((r) => r.peer.runtime === RUNC);
  console.log(
    `\nN = ${N} idle containers per peer, containerd ${cdVersion}, ${started.toISOString().slice(0, 16)} UTC, load at the end ${load}; ` +
      `kill latency over ${KILL_ALL ? "every container" : KILL_SAMPLE} (SIGKILL, ${KILL_PARALLEL === 1 ? "one at a time" : `${KILL_PARALLEL} at a time`}, ctr's start included)\n`,
  );
  const widthCols = WIDTHS.map((w) => `create+start /s @${w} (first → last batch)`);
  console.log(
    `| peer | N reached | ${widthCols.join(" | ")} | ÷ runc @${WIDTHS[0]} | PSS / idle container (MiB) | ÷ runc | kill median / p99 / max (ms) | delete all (s) | daemon PSS start → after (MiB); whole: each resident page counted whole | daemons (start → N → after) | daemon threads | daemon fds | containerd fds | mounts | per-container processes (N → after) |`,
  );
  console.log(`|---|---:|${WIDTHS.map(() => "---:|").join("")}---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|`);
  console.log(`| ctr version (one round trip: ctr's own floor) | | ${floors.map(f1).join(" | ")} | | | | | | | | | | | | |`);
  for (const r of rows) console.log(formatRow(r, runc));
  for (const r of rows) if (r.note) console.log(`\n${r.peer.name}: ${r.note}`);
  await env.stop();
  // Successors the first daemon started are this run's too: stopped by their pids.
  for (const pid of liveDaemons()) if (pid !== daemon?.pid) process.kill(pid, "SIGKILL");
  await daemon?.stop("SIGKILL");
  for (const d of [runtimeRoot(ns), containerStateDir(ns)]) rmSync(d, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
}
