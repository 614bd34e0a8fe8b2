// The "OCI runtime" of wasm containers in the shared-mode daemon: no process, no runc. A
// container is one Runner.run() of the daemon's engine, on a thread of the daemon
// (the engine's Runner starts a Worker per run). It answers the same calls as Runc so that
// the Task service and its state table drive it unchanged:
//
//   create  keeps the plan (module, argv, env, rootfs, limits) and its own copies of the
//           stdio fds containerd's fifos were opened as; nothing runs yet
//   start   runs the module; its exit is the task's exit (exitOf)
//   kill    aborts the run with the signal (epoch interrupt; 128+signal); before start, the
//           task simply ends with 128+signal, as a created runc init killed would
//   delete  aborts what still runs, frees the fds
//   ps      the daemon's pid: the process that runs the module (see README, shared mode)
//   pause   the module's thread waits at its next interrupt check until resume
//
// The pid of every wasm task is the daemon's: containerd only reports it (runwasi's
// Instance::start documents the value as "a unique ID (such as a PID) ... nothing
// internally should be using this ID"), and a real, live pid that runs the module is more
// useful to an operator than a made-up number.

import { closeSync, constants, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { SIGNALS, signaledStatus } from "../common/signals.ts";
import type { RunControl, Runner } from "../engines/engine.ts";
import { listenTcp, NetnsRestoreError } from "../linux/netns.ts";
import type { RuncStats } from "../linux/runc.ts";
import type { Exit, OciRuntime } from "../task/host.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import { makeStdinFifo, StdinRelay } from "./stdin-relay.ts";

/** What a wasm container runs, decided at Create from containerd's bundle. */
export interface InProcessPlan {
  /** The module's file on the host (under the mounted rootfs, or a volume's source). */
  modulePath: string;
  entry?: string;
  /** argv as the module sees it: the spec's process.args as given. */
  args: string[];
  env: string[];
  /** Host path preopened as the module's "/": the container's mounted rootfs. */
  rootfs: string;
  rootReadOnly: boolean;
  cwd: string;
  memoryLimitBytes?: number;
  /** The spec's volumes, preopened at their destinations (see volumePreopens in ./host.ts). */
  preopens?: { hostPath: string; guestPath: string; readOnly: boolean }[];
  /**
   * The network namespace a wasi:http service listens in (the spec's network namespace path:
   * the pod's). Absent: the daemon's own (host network, or a spec that asks for a new
   * namespace without a path, which nothing could reach; docs/ARCHITECTURE.md).
   */
  netns?: string;
}

interface Instance {
  plan: InProcessPlan;
  /** Our own open file descriptions of the container's stdio (containerd's fifos); -1 once closed (closeFds). */
  fds: [number, number, number];
  /** The module reads stdin from a fifo the daemon feeds (./stdin-relay.ts). */
  stdin: StdinRelay;
  abort: AbortController;
  /** SIGKILL (or a forced delete) of a service: no drain (RunContext.stopNow). */
  hardStop: AbortController;
  running: boolean;
  exit: Promise<Exit>;
  resolveExit: (e: Exit) => void;
  exited: boolean;
  startedAt?: number;
  /** Settles once the run and everything around it (the stdin relay) is over. */
  done?: Promise<void>;
  /** Pause and resume of the run, from the engine. */
  control?: RunControl;
  /** Paused by the Task service (applied once `control` arrives). */
  paused?: boolean;
  /** The first signal a running module was killed with: its exit status is 128+signal. */
  killSignal?: number;
  /** When the first kill was sent (performance.now()), for the debug log. */
  killedAt?: number;
}

export interface InProcessRuntimeOptions {
  /** The daemon's one Runner (loaded on first use). */
  runner: () => Promise<Runner>;
  /** What Create and Pids report as the task's pid. */
  pid: number;
  /** Counts runs in flight, across every sandbox (for ListSandboxes). */
  onRunning?: (delta: 1 | -1) => void;
  /** Debug lines (how long a kill took to end the run). */
  log?: (msg: string) => void;
}

export class InProcessRuntime {
  private readonly instances = new Map<string, Instance>();
  /** Plans by runtime bundle path, put there by the host's prepareBundle. */
  readonly plans = new Map<string, InProcessPlan>();

  constructor(private readonly o: InProcessRuntimeOptions) {}

  /** A wasi:http service's listening socket: in `netns` (the pod's), else in the daemon's namespace. */
  private listen(addr: string, backlog: number, netns: string | undefined): number {
    try {
      return listenTcp(addr, backlog, netns);
    } catch (e) {
      if (e instanceof NetnsRestoreError) {
        // The daemon's main thread is stuck in a pod's network namespace: every later
        // service would listen there. Nothing sane is left to do but stop; containerd then
        // reports the tasks exited and the thin shims' delete cleans up (as after a crash).
        process.stderr.write(`level=fatal msg=${JSON.stringify(e.message)}\n`);
        process.exit(70);
      }
      throw e;
    }
  }

  has(id: string): boolean {
    return this.instances.has(id);
  }

  get size(): number {
    return this.instances.size;
  }

  /** `workDir`: the container's own directory, where its stdin fifo goes. */
  async create(id: string, bundle: string, stdio: [number, number, number], workDir: string): Promise<number> {
    const plan = this.plans.get(bundle);
    if (!plan) throw new Error(`no in-process plan for bundle ${bundle}`);
    this.plans.delete(bundle);
    if (this.instances.has(id)) throw new TtrpcError(Code.ALREADY_EXISTS, `container ${id} already exists`);
    // The Task service closes its fds once the runtime has "its own copies", as runc's child
    // has after create: reopen each through /proc, a new open file description of the same
    // fifo. stdout/stderr read-write, so the fifo always has a reader and a write never
    // raises SIGPIPE in the daemon; stdin non-blocking so the open never waits for a writer.
    const fds: number[] = [];
    try {
      fds.push(openSync(`/proc/self/fd/${stdio[0]}`, constants.O_RDONLY | constants.O_NONBLOCK));
      fds.push(openSync(`/proc/self/fd/${stdio[1]}`, constants.O_RDWR));
      fds.push(openSync(`/proc/self/fd/${stdio[2]}`, constants.O_RDWR));
    } catch (e) {
      for (const fd of fds) closeQuietly(fd);
      throw e;
    }
    const fifo = join(workDir, "stdin");
    let stdin: StdinRelay;
    try {
      await makeStdinFifo(fifo);
      stdin = new StdinRelay(fds[0] as number, fifo);
    } catch (e) {
      for (const fd of fds) closeQuietly(fd);
      throw e;
    }
    let resolveExit!: (e: Exit) => void;
    const exit = new Promise<Exit>((r) => (resolveExit = r));
    const inst: Instance = {
      plan,
      fds: fds as [number, number, number],
      stdin,
      abort: new AbortController(),
      hardStop: new AbortController(),
      running: false,
      exit,
      resolveExit,
      exited: false,
    };
    this.instances.set(id, inst);
    return this.o.pid;
  }

  async start(id: string): Promise<void> {
    const inst = this.get(id);
    if (inst.exited) throw new Error(`container ${id} has exited`);
    if (inst.running) throw new Error(`container ${id} is already running`);
    inst.running = true;
    inst.startedAt = performance.now();
    const runner = await this.o.runner();
    const { plan } = inst;
    this.o.onRunning?.(1);
    // Not awaited: start answers once the run is under way, as `runc start` does.
    const run = runner
      .run({
        modulePath: plan.modulePath,
        ...(plan.entry ? { entry: plan.entry } : {}),
        args: plan.args,
        env: plan.env,
        rootDir: plan.rootfs,
        rootReadOnly: plan.rootReadOnly,
        ...(plan.preopens?.length ? { preopens: plan.preopens } : {}),
        cwd: plan.cwd,
        stdin: { kind: "path", path: inst.stdin.fifo },
        stdout: { kind: "fd", fd: inst.fds[1] },
        stderr: { kind: "fd", fd: inst.fds[2] },
        memoryLimitBytes: plan.memoryLimitBytes,
        signal: inst.abort.signal,
        // A wasi:http service listens in the pod's network namespace (../linux/netns.ts);
        // SIGKILL cuts its drain.
        httpListen: (addr, backlog) => this.listen(addr, backlog, plan.netns),
        stopNow: inst.hardStop.signal,
        onControl: (c) => {
          inst.control = c;
          if (inst.paused) c.pause();
        },
      })
      .then(
        // Killed while running, it ended with the signal, as a process would: even if what
        // the kill did (EOF on stdin) let the module reach its own exit first. A service's
        // code already says how its stop went (0: drained), as its executor's exit would.
        (r) => this.finish(inst, inst.killSignal !== undefined && !r.service ? signaledStatus(inst.killSignal) : r.code),
        () => this.finish(inst, 125),
      )
      .then(() => {
        if (inst.killedAt !== undefined)
          this.o.log?.(`${id}: run ended ${(performance.now() - inst.killedAt).toFixed(2)} ms after the kill`);
      })
      .finally(() => {
        inst.stdin.close();
        this.o.onRunning?.(-1);
      });
    const relay = inst.stdin.run(run);
    // containerd's stdin goes once the relay has let go of it (the run's output went at its exit).
    inst.done = Promise.all([run, relay])
      .then(() => {})
      .finally(() => closeFds(inst, [0, 1, 2]));
  }

  async kill(id: string, signal: number, _all: boolean): Promise<void> {
    const inst = this.get(id);
    if (inst.exited) throw new Error(`container ${id}: process already finished`);
    if (!inst.running) {
      // Created, never started: like runc's waiting init, it ends with the signal.
      this.finish(inst, signaledStatus(signal));
      return;
    }
    const again = inst.killSignal !== undefined;
    inst.killedAt ??= performance.now();
    inst.killSignal ??= signal;
    // Interrupt first, then end stdin: a module blocked reading it gets EOF, returns to wasm
    // and meets the interrupt.
    inst.abort.abort(signal);
    // A service drains on the first signal; SIGKILL, first or later, cuts it (as SIGKILL of
    // its executor would), and so does a second signal (as its executor does).
    if (signal === SIGNALS.SIGKILL || again) inst.hardStop.abort(signal);
    inst.stdin.close();
  }

  async delete(id: string, force: boolean): Promise<void> {
    const inst = this.instances.get(id);
    if (!inst) {
      if (force) return;
      throw new Error(`container ${id} does not exist`);
    }
    if (!inst.exited) {
      if (!force && inst.running) throw new Error(`container ${id} is running`);
      if (inst.running) {
        inst.killSignal ??= SIGNALS.SIGKILL;
        inst.abort.abort(SIGNALS.SIGKILL);
        inst.hardStop.abort(SIGNALS.SIGKILL);
        inst.stdin.close();
      } else this.finish(inst, signaledStatus(SIGNALS.SIGKILL));
      await inst.exit;
    }
    // The run's thread has ended and the relay let go of the fifo: nothing of it is left.
    await inst.done;
    closeFds(inst, [0, 1, 2]);
    this.instances.delete(id);
  }

  /**
   * The module stops at its next interrupt check (running wasm: at once; a sleep or a read
   * in progress: when it returns) and its thread waits until resumed. A kill still ends it.
   */
  async pause(id: string): Promise<void> {
    this.setPaused(id, true);
  }

  async resume(id: string): Promise<void> {
    this.setPaused(id, false);
  }

  private setPaused(id: string, paused: boolean): void {
    const inst = this.get(id);
    if (!inst.running || inst.exited) throw new Error(`${paused ? "pause" : "resume"} container ${id}: not running`);
    // Before the engine has handed over its control (the run is still starting), the wish
    // is kept and applied when it does.
    inst.paused = paused;
    if (paused) inst.control?.pause();
    else inst.control?.resume();
  }

  async ps(id: string): Promise<number[]> {
    const inst = this.get(id);
    return inst.running && !inst.exited ? [this.o.pid] : [];
  }

  /**
   * No cgroup of its own, so the figures a cgroup would give are the module's own: the CPU
   * time of the thread that runs it (from /proc/self/task/<tid>/stat), its task count, and
   * its linear memory as the memory usage (anonymous memory: rss), the store's limit as the
   * limit. In the cgroup's shape, so containerd and the kubelet read them unchanged (CRI's
   * working set is usage minus inactive file pages: here, the linear memory).
   */
  async stats(id: string): Promise<RuncStats> {
    const inst = this.get(id);
    const live = inst.running && !inst.exited;
    const out: RuncStats = { pids: { current: live ? 1 : 0 } };
    // Asked first, before any await: the engine gathers the asks of one turn into one epoch
    // bump, and the Stats of a node's tasks come together (containerd asks for all at once).
    const memory = live ? inst.control?.memoryBytes?.() : undefined;
    const tid = live ? inst.control?.threadId?.() : undefined;
    if (tid) {
      const cpu = await threadCpu(tid);
      if (cpu) out.cpu = { usage: { total: cpu.user + cpu.kernel, user: cpu.user, kernel: cpu.kernel } };
    }
    const bytes = await memory;
    if (bytes !== undefined) {
      out.memory = {
        // Linear memory only grows while a module runs: the current size is also the peak.
        usage: { usage: bytes, max: bytes, limit: inst.plan.memoryLimitBytes ?? 0 },
        raw: { rss: bytes, total_rss: bytes, anon: bytes },
      };
    }
    return out;
  }

  exitOf(id: string): Promise<Exit> | undefined {
    return this.instances.get(id)?.exit;
  }

  /** Every container still running gets `signal` (the daemon's shutdown). */
  killAll(signal: number): void {
    for (const [id, inst] of this.instances) if (!inst.exited) void this.kill(id, signal, true).catch(() => {});
  }

  private finish(inst: Instance, status: number): void {
    if (inst.exited) return;
    inst.exited = true;
    // The output ends with the run, before its exit is reported, as a process's fds close
    // before its parent can reap it; not at Delete. containerd's client (task.Delete in
    // client/task.go, since 1.6.22, 1.7.3 and in 2.x) waits for its copy of the output to
    // reach EOF before it sends Delete; earlier ones closed their read ends first. Held until
    // Delete, our copies would keep the output open for ever: CRI's exit handling (2.x's
    // handleContainerExit) and `ctr run --rm` would wait on it and never delete the task.
    // A run that never started leaves nothing to relay: its stdin goes too.
    closeFds(inst, inst.running ? [1, 2] : [0, 1, 2]);
    inst.resolveExit({ status, at: new Date() });
  }

  private get(id: string): Instance {
    const inst = this.instances.get(id);
    if (!inst) throw new Error(`container ${id} does not exist`);
    return inst;
  }
}

/** Clock ticks per second as /proc reports times (USER_HZ: 100 on every Linux we run on). */
const USER_HZ = 100;

/**
 * A thread of this process: user and kernel CPU time in nanoseconds, or undefined if it is
 * gone. The total is the scheduler's (schedstat: nanoseconds on a CPU), split by the ratio of
 * stat's user and system ticks: ticks alone are 10 ms steps, and a module that has printed a
 * line and gone to sleep has used less than one.
 */
export async function threadCpu(tid: number): Promise<{ user: number; kernel: number } | undefined> {
  let stat: string;
  let sched: string;
  try {
    [stat, sched] = await Promise.all([
      readFile(`/proc/self/task/${tid}/stat`, "utf8"),
      readFile(`/proc/self/task/${tid}/schedstat`, "utf8").catch(() => ""),
    ]);
  } catch {
    return undefined;
  }
  // Fields after the command (which may hold spaces, in parentheses): state is field 3,
  // utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ns = (ticks: string | undefined) => Math.round((Number(ticks) * 1e9) / USER_HZ);
  const user = ns(f[11]);
  const kernel = ns(f[12]);
  const total = Number(sched.split(" ")[0]);
  if (!Number.isFinite(total) || total <= 0) return { user, kernel };
  const u = user + kernel > 0 ? Math.round((total * user) / (user + kernel)) : total;
  return { user: u, kernel: total - u };
}

/** Closes the instance's stdio fds at `which` that are still open. */
function closeFds(inst: Instance, which: (0 | 1 | 2)[]): void {
  for (const i of which) {
    const fd = inst.fds[i];
    inst.fds[i] = -1;
    if (fd >= 0) closeQuietly(fd);
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}

/** Runs wasm containers in-process and everything else (pause, sidecars) through runc. */
export class HybridRuntime implements OciRuntime {
  constructor(
    readonly inProcess: InProcessRuntime,
    private readonly runc: OciRuntime,
  ) {}

  create(
    id: string,
    bundle: string,
    pidFile: string,
    stdio: [number, number, number] | null,
    logFile: string,
    consoleSocket?: string,
  ): Promise<number> {
    if (this.inProcess.plans.has(bundle)) {
      // A terminal is a pty that runc makes for a process; a module on a daemon thread has none.
      if (stdio === null) {
        this.inProcess.plans.delete(bundle);
        return Promise.reject(notInShared(id, "terminal=true"));
      }
      return this.inProcess.create(id, bundle, stdio, dirname(pidFile));
    }
    return this.runc.create(id, bundle, pidFile, stdio, logFile, consoleSocket);
  }

  private pick(id: string): OciRuntime | InProcessRuntime {
    return this.inProcess.has(id) ? this.inProcess : this.runc;
  }

  start(id: string): Promise<void> {
    return this.pick(id).start(id);
  }
  kill(id: string, signal: number, all: boolean): Promise<void> {
    return this.pick(id).kill(id, signal, all);
  }
  delete(id: string, force: boolean): Promise<void> {
    return this.pick(id).delete(id, force);
  }
  pause(id: string): Promise<void> {
    return this.pick(id).pause(id);
  }
  resume(id: string): Promise<void> {
    return this.pick(id).resume(id);
  }
  ps(id: string): Promise<number[]> {
    return this.pick(id).ps(id);
  }
  stats(id: string): Promise<RuncStats> {
    return this.pick(id).stats(id);
  }
  /** Exec runs in a native container through runc; a wasm container here has no process to enter. */
  exec(
    id: string,
    processFile: string,
    pidFile: string,
    stdio: [number, number, number] | null,
    logFile: string,
    consoleSocket?: string,
  ): Promise<number> {
    if (this.inProcess.has(id)) return Promise.reject(notInShared(id, "Exec"));
    return this.runc.exec(id, processFile, pidFile, stdio, logFile, consoleSocket);
  }
  /** Cgroup limits: a native container's through runc; a wasm container here has no cgroup of its own. */
  update(id: string, resources: string): Promise<void> {
    if (this.inProcess.has(id)) return Promise.reject(notInShared(id, "Update"));
    return this.runc.update(id, resources);
  }
  exitOf(id: string): Promise<Exit> | undefined {
    return this.inProcess.exitOf(id);
  }
}

/** The error for what a wasm container in the daemon cannot do (Exec, a terminal, Update). */
export function notInShared(id: string, what: string): TtrpcError {
  return new TtrpcError(
    Code.UNIMPLEMENTED,
    `${what} of wasm container ${id} is not supported in shared mode (it runs in the daemon, not in a process of its own)`,
  );
}
