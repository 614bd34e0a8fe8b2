// A wasm container of the shared-mode daemon, as the task's Instance (src/task/instance.ts):
// no process, no runc. It is one Runner.run() of the daemon's engine, on a thread of the
// daemon (the engine's Runner starts a Worker per run), made from its plan (what to run,
// decided at Create from containerd's bundle: ./sandbox-host.ts):
//
//   create  keeps the plan (a RunPlan, src/engines/run-plan.ts: the same as normal mode's
//           executor runs), mounts its WASI view under the container's work dir
//           (src/oci/wasi-view.ts) and keeps its own copies of the stdio fds containerd's
//           fifos were opened as; or, with a terminal, makes a pty (src/linux/pty.ts) whose
//           master it hands to the Task service as runc sends its to the console socket, and
//           whose slave is the module's stdout and stderr and, through the stdin relay, its
//           stdin (runStdio says why); nothing runs yet
//   start   runs the module; its exit is the task's exit (`exited`)
//   kill    aborts the run with the signal (epoch interrupt; 128+signal); before start, the
//           task simply ends with 128+signal, as a created runc init killed would
//   delete  aborts what still runs, takes the view down, frees the fds
//   pids    the daemon's pid: the process that runs the module (see README, shared mode)
//   exec    another run in the same view (its own thread, store, stdio and exit), planned by
//           the same rules as normal mode's exec (src/oci/exec-process.ts planExec), with the
//           container's limits; it ends when the container's run ends or is deleted
//   pause   the module's thread waits at its next interrupt check until resume (a wasi:http
//           service: nothing accepted or answered, connections queue, until resume)
//   update  a new CPU quota, period or shares, and a new memory limit (its store's, the
//           daemon's default when the spec has none), applied at its next interrupt check;
//           a memory limit below what the module holds is refused, as cgroup v1 refuses it;
//           a new cpuset moves the run's thread, or is refused for a pooled run
//
// The cpuset (cpu.cpus, cpu.mems) is decided by src/linux/cpuset.ts at create: a run whose
// cpuset leaves out some of the daemon's CPUs gets a thread of its own confined to it; one the
// daemon cannot honour fails create, as runc's create fails on it.
//
// The pid of every wasm task is the daemon's: containerd only reports it (runwasi's
// Instance::start documents the value as "a unique ID (such as a PID) ... nothing
// internally should be using this ID"), and a real, live pid that runs the module is more
// useful to an operator than a made-up number.

import { closeSync, constants, openSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { SIGNALS, signaledStatus } from "../common/signals.ts";
import {
  type CpuLimits,
  type Engine,
  type HttpServiceCounters,
  MemoryLimitBelowUsage,
  type RunControl,
  type Runner,
} from "../engines/engine.ts";
import { openModuleFile } from "../engines/module-file.ts";
import { type RunPlan, runContextOf } from "../engines/run-plan.ts";
import { CpusetError, cpusetPlacement, daemonPlaces } from "../linux/cpuset.ts";
import { idMaps } from "../linux/idmap.ts";
import { close as closeFd, setNonBlocking, strerror } from "../linux/libc.ts";
import { fdPath } from "../linux/open-in-root.ts";
import { openPty } from "../linux/pty.ts";
import type { RuncStats } from "../linux/runc.ts";
import { planExec } from "../oci/exec-process.ts";
import { readSpec } from "../oci/spec.ts";
import { mountViewAs, unmountView, viewDir } from "../oci/wasi-view.ts";
import type { Exit, Instance, InstanceExec, InstanceRequest, OciProcess, ProcessIo } from "../task/instance.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import { makeStdinFifo, StdinRelay } from "./stdin-relay.ts";
import { Unstick } from "./unstick.ts";

export interface InProcessOptions {
  /** The daemon's one Runner (loaded on first use). */
  runner: () => Promise<Runner>;
  /** What the task reports as its pid. */
  pid: number;
  /** Counts runs in flight, across every sandbox (for ListSandboxes). */
  onRunning?: (delta: 1 | -1) => void;
  /** Debug lines (how long a kill took to end the run). */
  log?: (msg: string) => void;
  /** A running module's run ended `seconds` after its first kill (the daemon's metrics). */
  onKillExited?: (seconds: number) => void;
  /**
   * The memory limit of a container whose spec sets none (the daemon's --default-memory-limit):
   * every run in the daemon is bounded. Absent: none (unbounded).
   */
  defaultMemoryBytes?: number;
  /**
   * The most WASI handles a container may hold open, whatever its spec's RLIMIT_NOFILE says
   * (that applies when lower): each is an fd of the daemon's.
   */
  maxOpenFiles?: number;
  /** The engine whose canHandle plans an exec (src/oci/exec-process.ts); absent: Exec is refused. */
  engine?: Engine;
}

/** Where a container's files are: what an exec is planned from and keeps its stdin fifo in. */
interface ContainerFiles {
  /** containerd's bundle (config.json, the rootfs mounted). */
  bundle: string;
  /** The container's work dir. */
  workDir: string;
}

/**
 * The most execs one wasm container may have started and not yet deleted. Each exec's store is
 * bounded by the container's memory limit by itself (wasmtime's limiter is per store: one
 * budget cannot be shared between stores), so a container takes at most (1 + this) times its
 * limit from the daemon. Exec probes run one at a time; a person's `kubectl exec` a few.
 */
export const MAX_EXEC_RUNS = 4;

export class InProcessInstance implements Instance {
  readonly kind = "wasm";
  readonly pid: number;
  readonly exited: Promise<Exit>;
  private resolveExit!: (e: Exit) => void;
  private readonly abort = new AbortController();
  /** SIGKILL (or a forced delete) of a service: no drain (RunContext.stopNow). */
  private readonly hardStop = new AbortController();
  private running = false;
  private ended = false;
  /** Settles once the run and everything around it (the stdin relay) is over. */
  private done?: Promise<void>;
  /** Pause and resume of the run, from the engine. */
  private control?: RunControl;
  /** Settles once the engine has handed over `control`, or the run is over without one (what an Update that moves it waits for). */
  private readonly handedOver = Promise.withResolvers<void>();
  /** Paused by the Task service (applied once `control` arrives). */
  private paused?: boolean;
  /** The first signal a running module was killed with: its exit status is 128+signal. */
  private killSignal?: number;
  /** When the first kill was sent (performance.now()), for the debug log. */
  private killedAt?: number;
  /** Its fds are closed: a second delete has nothing left to do. */
  private deleted = false;
  /** The memory limit the run gets (or has): the spec's, else the daemon's default. */
  private memoryLimit: number | undefined;
  /** A wasi:http service's request counters, once it serves (the daemon's metrics). */
  private http?: () => HttpServiceCounters;
  /** The CPU limits the run gets (or has): the spec's, as Update changed them; `cpus` as placed (placeCpuset). */
  private cpu: CpuLimits;
  /** The cpuset as the spec and Updates gave it (kept for an Update that names one of the two only). */
  private cpuset: { cpus?: string; mems?: string };
  /** Update changed `cpu` while the engine had not handed over its control yet. */
  private cpuPending = false;
  /** The same for `memoryLimit`. */
  private memoryPending = false;
  /** After a kill, frees the run's thread from a blocked write to its stdout or stderr (./unstick.ts). */
  private unstick?: Unstick;
  /** The runs of its exec processes that started, until their Delete (or the container's) frees them. */
  private readonly execRuns = new Map<InProcessInstance, { fifo: string; freed?: Promise<void> }>();

  private constructor(
    readonly id: string,
    /** What it runs: the plan is the whole of what Create decided. */
    private readonly plan: RunPlan,
    /** The module's "/": its WASI view, mounted by create (src/oci/wasi-view.ts). */
    private readonly view: string,
    /**
     * Our own open file descriptions of the container's stdio (containerd's fifos; with a
     * terminal, the pty's slave as stdin, and -1 for the outputs); -1 once closed.
     */
    private readonly fds: [number, number, number],
    /** The module reads stdin from a fifo the daemon feeds (./stdin-relay.ts). */
    private readonly stdin: StdinRelay,
    /** With a terminal: the pty's slave (fds[0] owns it), the module's stdout and stderr; -1 without one. */
    private readonly tty: number,
    private readonly o: InProcessOptions,
    /** The container's bundle and work dir; absent for an exec's own run. */
    private readonly files?: ContainerFiles,
  ) {
    this.pid = o.pid;
    this.exited = new Promise((r) => (this.resolveExit = r));
    this.memoryLimit = plan.limits.memoryBytes ?? o.defaultMemoryBytes;
    this.cpu = { ...plan.limits.cpu };
    this.cpuset = { ...plan.limits.cpuset };
  }

  /**
   * Create: holds `plan` with its own copies of the stdio fds and the module's stdin fifo in
   * the work dir; nothing runs until start. `warm` (filling the compile cache) is awaited
   * before it answers: the module is compiled once per daemon, every run deserializes.
   */
  static async create(
    plan: RunPlan,
    req: InstanceRequest,
    o: InProcessOptions & { warm?: () => Promise<void> },
  ): Promise<InProcessInstance> {
    // Before anything is made: a cpuset the daemon cannot hold the run to is refused.
    const cpus = placeCpuset(`create wasm container ${req.id}`, plan.limits.cpuset);
    // The module's "/" (nodev: a device node in the image or a volume is not for it to open),
    // as the container's user (process.user) sees it: the daemon is root. Before the compile
    // reads the module: a user's rootfs is mounted anew. Its undo is a runtime step: while it
    // is mounted the work dir must stay, or its recursive removal would reach into the rootfs
    // and the volumes.
    const view = viewDir(req.workDir);
    await mountViewAs(plan.view, view, plan.user);
    req.undo.push({ what: "unmount the module's view", run: async () => unmountView(view), runtime: true });
    const warming = o.warm?.();
    try {
      let inst: InProcessInstance | undefined;
      const io = await runStdio(req.io, join(req.workDir, "stdin"), () => inst?.hangUp());
      inst = new InProcessInstance(req.id, plan, view, io.fds, io.stdin, io.tty, o, { bundle: req.bundle, workDir: req.workDir });
      if (cpus) inst.cpu.cpus = cpus;
      const created = inst;
      req.undo.push({ what: "in-process delete", run: () => created.delete(true), runtime: true });
      return inst;
    } finally {
      await warming;
    }
  }

  async start(): Promise<void> {
    if (this.ended) throw new Error(`container ${this.id} has exited`);
    if (this.running) throw new Error(`container ${this.id} is already running`);
    const { plan } = this;
    // The module, opened once inside the module's view (an artifact's: in its run directory),
    // and only if it is a regular file within the cap (src/engines/module-file.ts): a file swapped
    // since Create (a symlink to /dev/zero, a fifo, a huge file) fails Start with what it is now,
    // and nothing of it is read. The run reads it through this fd, off the main thread.
    const m = plan.module;
    const at = m.artifact ? { root: m.hostRoot ?? dirname(m.host), path: basename(m.host) } : { root: this.view, path: m.path };
    const module = openModuleFile(at.root, at.path, m.path);
    this.running = true;
    let runner: Runner;
    try {
      runner = await this.o.runner();
    } catch (e) {
      closeQuietly(module.fd);
      this.running = false;
      this.handedOver.resolve();
      throw e;
    }
    this.o.onRunning?.(1);
    // Not awaited: start answers once the run is under way, as `runc start` does.
    const run = runner
      .run({
        // The module and its view as the daemon sees them, on the host.
        ...runContextOf(plan, { modulePath: fdPath(module.fd), rootDir: this.view }),
        // Bounded in the daemon whatever the spec says (the node's default), and held to its
        // CPU quota by the engine (no cgroup of its own).
        ...(this.memoryLimit !== undefined ? { memoryLimitBytes: this.memoryLimit } : {}),
        cpu: { ...this.cpu },
        // stdin through the relay (from containerd's fifo, or from the terminal); the output to
        // containerd's fifos, or to the terminal (both outputs: a terminal has one stream).
        stdin: { kind: "path", path: this.stdin.fifo },
        stdout: { kind: "fd", fd: this.tty >= 0 ? this.tty : this.fds[1] },
        stderr: { kind: "fd", fd: this.tty >= 0 ? this.tty : this.fds[2] },
        // The module asks whether that is a terminal (isatty): the engine says so.
        ...(this.tty >= 0 ? { terminal: true } : {}),
        ...maxOpenFiles(plan.limits.openFiles, this.o.maxOpenFiles),
        signal: this.abort.signal,
        watchStdin: (news) => this.stdin.watch(news),
        // A wasi:http service's sockets (its listener, its outgoing requests) are the pod's
        // network namespace's; a spec that asks for a namespace of its own without naming
        // one gets no outgoing network (there is none to give it). SIGKILL cuts its drain.
        httpNetwork: { ...(plan.netns ? { netns: plan.netns } : {}), outgoing: !plan.unnamedNetns },
        stopNow: this.hardStop.signal,
        onHttpService: (counters) => {
          this.http = counters;
        },
        onControl: (c) => {
          this.control = c;
          this.handedOver.resolve();
          if (this.paused) c.pause();
          if (this.cpuPending) {
            this.cpuPending = false;
            c.setCpu?.({ ...this.cpu });
          }
          if (this.cpu.cpus) this.o.log?.(`${this.id}: runs on a thread of its own confined to CPUs ${this.cpu.cpus.join(",")}`);
          if (this.memoryPending) {
            this.memoryPending = false;
            // Nothing runs yet: only a limit the module cannot start under fails (its run then says why).
            c.setMemoryLimit?.(this.memoryLimit).catch((e) => this.o.log?.(`${this.id}: memory limit: ${String(e)}`));
          }
        },
      })
      .then(
        // Killed while running, it ended with the signal, as a process would: even if what
        // the kill did (EOF on stdin) let the module reach its own exit first. A service's
        // code already says how its stop went (0: drained), as its executor's exit would.
        (r) => {
          // Which way it ran (a test of the pools reads this line).
          if (r.stats.pooled) this.o.log?.(`${this.id}: ran on a run pool`);
          else if (this.cpu.cpus) this.o.log?.(`${this.id}: ran on a thread of its own confined to CPUs ${this.cpu.cpus.join(",")}`);
          this.watchKilledThread();
          const status = this.killSignal !== undefined && !r.service ? signaledStatus(this.killSignal) : r.code;
          this.finish(status);
        },
        () => {
          this.watchKilledThread();
          this.finish(125);
        },
      )
      .finally(() => {
        closeQuietly(module.fd);
        this.stdin.close();
        this.o.onRunning?.(-1);
      });
    const relay = this.stdin.run(run);
    // containerd's stdin goes once the relay has let go of it (the run's output went at its exit).
    this.done = Promise.all([run, relay])
      .then(() => {})
      .finally(() => this.closeFds([0, 1, 2]));
  }

  async kill(signal: number, _all: boolean): Promise<void> {
    if (this.ended) throw new Error(`container ${this.id}: process already finished`);
    if (!this.running) {
      // Created, never started: like runc's waiting init, it ends with the signal.
      this.finish(signaledStatus(signal));
      return;
    }
    const again = this.killSignal !== undefined;
    this.killedAt ??= performance.now();
    this.killSignal ??= signal;
    // Interrupt first, then end stdin: a module blocked reading it gets EOF, returns to wasm
    // and meets the interrupt.
    this.abort.abort(signal);
    // A service drains on the first signal; SIGKILL, first or later, cuts it (as SIGKILL of
    // its executor would), and so does a second signal (as its executor does).
    if (signal === SIGNALS.SIGKILL || again) this.hardStop.abort(signal);
    this.stdin.close();
  }

  /**
   * The terminal hung up (its master closes: CloseIO and then EOF of containerd's stdin, or
   * Delete): a running module gets SIGHUP, as the kernel sends a process whose terminal hangs
   * up, and as normal mode's executor ends its module with it (129).
   */
  hangUp(): void {
    if (this.running && !this.ended) void this.kill(SIGNALS.SIGHUP, false).catch(() => {});
  }

  async delete(force: boolean): Promise<void> {
    if (this.deleted) return;
    // As runc's: the init's end ends its execs. Theirs are over (thread, store, fds) first.
    if (force || this.ended) await Promise.all([...this.execRuns.keys()].map((r) => this.freeExec(r)));
    if (!this.ended) {
      if (!force && this.running) throw new Error(`container ${this.id} is running`);
      if (this.running) {
        this.killSignal ??= SIGNALS.SIGKILL;
        this.abort.abort(SIGNALS.SIGKILL);
        this.hardStop.abort(SIGNALS.SIGKILL);
        this.stdin.close();
      } else this.finish(signaledStatus(SIGNALS.SIGKILL));
      await this.exited;
    }
    // The run's thread has ended and the relay let go of the fifo: nothing of it is left.
    await this.done;
    if (this.deleted) return;
    this.deleted = true;
    this.unstick?.stop();
    this.closeFds([0, 1, 2]);
  }

  /**
   * The module stops at its next interrupt check (running wasm: at once; a sleep or a read
   * in progress: when it returns) and its thread waits until resumed. A kill still ends it.
   */
  async pause(): Promise<void> {
    this.setPaused(true);
  }

  async resume(): Promise<void> {
    this.setPaused(false);
  }

  private setPaused(paused: boolean): void {
    if (!this.running || this.ended) throw new Error(`${paused ? "pause" : "resume"} container ${this.id}: not running`);
    // Before the engine has handed over its control (the run is still starting), the wish
    // is kept and applied when it does.
    this.paused = paused;
    if (paused) this.control?.pause();
    else this.control?.resume();
    // Its execs with it, as runc's freezer takes every process of the cgroup.
    for (const r of this.execRuns.keys()) if (r.running && !r.ended) r.setPaused(paused);
  }

  async pids(): Promise<number[]> {
    return this.running && !this.ended ? [this.o.pid] : [];
  }

  /**
   * No cgroup of its own, so the figures a cgroup would give are the module's own: the CPU
   * time of the thread that runs it (from /proc/self/task/<tid>/stat), its task count, and
   * its linear memory as the memory usage (anonymous memory: rss), the store's limit as the
   * limit. In the cgroup's shape, so containerd and the kubelet read them unchanged (CRI's
   * working set is usage minus inactive file pages: here, the linear memory).
   */
  async stats(): Promise<RuncStats> {
    const live = this.running && !this.ended;
    // No OOM killer acts on a module (oomKilled): its count of OOM kills is 0, as a cgroup's
    // that was never over its limit.
    const out: RuncStats = { pids: { current: live ? 1 : 0 }, oomKills: 0 };
    // Asked first, before any await: the engine gathers the asks of one turn into one epoch
    // bump, and the Stats of a node's tasks come together (containerd asks for all at once).
    const memory = live ? this.control?.memoryBytes?.() : undefined;
    const tid = live ? this.control?.threadId?.() : undefined;
    // A wasi:http service runs on the library's threads, a pooled run on a thread of many runs:
    // the engine counts its CPU time, not split into user and kernel time (its clocks count both).
    const total = live ? this.control?.cpuNs?.() : undefined;
    const cpu = total !== undefined ? { total } : tid ? await threadCpu(tid) : undefined;
    if (cpu) {
      out.cpu = { usage: "total" in cpu ? { total: cpu.total } : { total: cpu.user + cpu.kernel, user: cpu.user, kernel: cpu.kernel } };
      // The engine's CPU quota, counted as a cgroup's cpu.stat (../engines/wasmtime/cpu-throttle.ts).
      const t = this.control?.cpuThrottling?.();
      if (t)
        out.cpu = { ...out.cpu, throttling: { periods: t.periods, throttledPeriods: t.throttledPeriods, throttledTime: t.throttledNs } };
    }
    const bytes = await memory;
    if (bytes !== undefined) {
      out.memory = {
        // Linear memory only grows while a module runs: the current size is also the peak. (A
        // service's stores come and go with its requests: what they hold now.)
        usage: { usage: bytes, max: bytes, limit: this.memoryLimit ?? 0 },
        raw: { rss: bytes, total_rss: bytes, anon: bytes },
      };
    }
    return out;
  }

  /** A wasi:http service's request counters while it runs; undefined for a module that is not one (or not serving yet). */
  httpCounters(): HttpServiceCounters | undefined {
    return this.running && !this.ended ? this.http?.() : undefined;
  }

  /**
   * New limits (CRI's UpdateContainerResources), runc's way: what the resources leave out
   * keeps its value. The CPU quota, period and shares apply to a running module at its next
   * interrupt check (the engine throttles its thread; a service's, all of its threads). The
   * memory limit is its store's (a service's: all of its stores together), the daemon's
   * default for 0 or -1, as at Create: never unbounded while the daemon has a default. A
   * running module holds to a new one from its next interrupt check on; one below what it
   * holds now is refused and nothing of the update applied, as cgroup v1 refuses a limit
   * below a cgroup's usage (EBUSY: runc's "unable to set memory limit"), since memory a module
   * holds cannot be taken from it (there is no reclaim; cgroup v2 would OOM-kill instead).
   * Its execs get the container's new limits, each for its own store.
   */
  async update(resources: string): Promise<void> {
    const r = parseResources(this.id, resources);
    // The cpuset first, and every refusal of it before anything applies.
    const cpuset = r.cpuset ? { ...this.cpuset, ...r.cpuset } : this.cpuset;
    const cpus = r.cpuset ? placeCpuset(`update ${this.id}`, cpuset) : this.cpu.cpus;
    const moved = !sameCpus(cpus, this.cpu.cpus);
    if (moved) for (const run of [this, ...this.execRuns.keys()]) await run.checkMovable();
    if (r.memory !== undefined) {
      // 0 or -1 ("unlimited" in a spec) is the daemon's default, as at Create.
      const limit = r.memory > 0 ? r.memory : this.o.defaultMemoryBytes;
      if (limit !== this.memoryLimit) {
        // The container's run first (its refusal changes nothing), then each exec's.
        const runs = [this, ...[...this.execRuns.keys()].filter((run) => !run.ended)];
        for (const run of runs) await run.applyMemoryLimit(limit);
        this.memoryLimit = limit;
      }
    }
    this.cpuset = cpuset;
    if (!r.cpu && !moved) return;
    const next: CpuLimits = { ...this.cpu, ...r.cpu, ...(cpus ? { cpus } : {}) };
    if (!cpus) delete next.cpus;
    this.applyCpu(next);
    // Its execs run under the container's CPU limits (each by itself: see exec).
    for (const run of this.execRuns.keys()) if (!run.ended) run.applyCpu(this.cpu);
  }

  /** This run's store (a service's stores) holds to `limit` from now on; refused when it holds more already. */
  private async applyMemoryLimit(limit: number | undefined): Promise<void> {
    if (this.running && !this.ended && !this.control) {
      // Still starting (its module read and checked): the engine gets it with its control.
      this.memoryPending = true;
    } else if (this.running && !this.ended && this.control?.setMemoryLimit) {
      try {
        await this.control.setMemoryLimit(limit);
      } catch (e) {
        if (e instanceof MemoryLimitBelowUsage)
          throw new Error(
            `update of wasm container ${this.id}: unable to set memory limit to ${e.limit} (current usage: ${e.usage}): in shared mode the memory a module holds cannot be taken back from it, as cgroup v1 refuses a limit below its usage`,
          );
        throw new Error(`update of wasm container ${this.id}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    this.memoryLimit = limit;
  }

  private applyCpu(cpu: CpuLimits): void {
    const moved = !sameCpus(cpu.cpus, this.cpu.cpus);
    this.cpu = { ...cpu };
    if (!this.running || this.ended) return;
    if (this.control?.setCpu) this.control.setCpu({ ...this.cpu });
    else this.cpuPending = true;
    // checkMovable let it through: the run has a thread of its own to move.
    if (moved) this.control?.setCpus?.(this.cpu.cpus);
  }

  /**
   * Throws if the run cannot be moved to another cpuset now (update checks this for every run
   * of the container before it changes anything). A pooled run shares its thread with other
   * containers' runs: confining that thread would confine them, and moving a run off its pool
   * is not something the engine can do. A wasi:http service's threads are its own: the http
   * library moves them all.
   * A run still starting is waited for: which thread it runs on is the engine's choice, told
   * with its control (its start is short: the module was compiled at Create).
   */
  private async checkMovable(): Promise<void> {
    if (!this.running || this.ended) return;
    await this.handedOver.promise;
    if (this.ended || !this.control) return;
    if (!this.control.setCpus)
      throw new TtrpcError(
        Code.FAILED_PRECONDITION,
        `update ${this.id}: it runs on a thread it shares with other runs (a run pool), which cannot be confined to its cpuset alone; nothing was changed (re-create the container with the cpuset, or run it in normal mode, io.containerd.wasmtime.v1)`,
      );
  }

  /** No cgroup, no OOM killer: a module over its limit fails its memory.grow instead. */
  oomKilled(): null {
    return null;
  }

  /**
   * Exec: the process planned by the container's rules, as normal mode plans it (planExec):
   * a module of the container (or WAT, or `#export`; an artifact's own module) runs later, on
   * Start, as another run in this container's view (with a terminal of its own if it asks for
   * one). Refused here, before anything is made: a native program (no Linux container to run
   * it in), another user than the container's (its view is mounted for the container's user).
   */
  async exec(execId: string, process: OciProcess): Promise<InstanceExec> {
    const what = `exec ${execId} in wasm container ${this.id}`;
    const { engine } = this.o;
    if (!this.files || !engine) throw notInShared(this.id, "Exec");
    if (this.ended || this.deleted) throw new TtrpcError(Code.FAILED_PRECONDITION, `${what}: it has exited`);
    const { bundle } = this.files;
    const own = this.plan.module;
    const planned = await planExec({
      bundle,
      spec: await readSpec(bundle),
      engine,
      process,
      // An artifact's module is named by its host path here: nothing is mounted into a container.
      wasm: {
        artifact: () => (own.artifact ? { host: own.host, hostRoot: own.hostRoot ?? dirname(own.host), path: own.host } : undefined),
      },
    });
    if (planned.kind === "native")
      throw new TtrpcError(
        Code.FAILED_PRECONDITION,
        `${what}: ${planned.path} is a native program, and in shared mode a wasm container runs on a thread of the daemon: it has no Linux container to run a process in (normal mode runs it with runc exec in the container)`,
      );
    const { user } = planned.run;
    if (JSON.stringify(idMaps(user)) !== JSON.stringify(idMaps(this.plan.user)))
      throw new TtrpcError(
        Code.FAILED_PRECONDITION,
        `${what}: as user ${user.uid}:${user.gid}, but the container runs as ${this.plan.user.uid}:${this.plan.user.gid}: in shared mode its view is mounted for its own user only`,
      );
    // The container's network, not the one the bundle's spec names: under containerd's shim
    // sandboxer that is the daemon's, which the container's plan has made the pod's own.
    const { netns: _spec, unnamedNetns: _unnamed, ...run } = planned.run;
    const { netns, unnamedNetns } = this.plan;
    return new InProcessExec(this, execId, { ...run, ...(netns ? { netns } : {}), ...(unnamedNetns ? { unnamedNetns } : {}) });
  }

  /**
   * Starts an exec's run: its own thread and store (bounded by the container's memory limit,
   * held to its CPU limits as they are now), its own copies of its stdio and its own stdin
   * fifo in the work dir, or its own terminal; the container's view. It is this container's until freed (freeExec).
   */
  async startExec(execId: string, plan: RunPlan, stdio: ProcessIo): Promise<InProcessInstance> {
    if (!this.files || this.ended || this.deleted)
      throw new TtrpcError(Code.FAILED_PRECONDITION, `exec ${execId}: container ${this.id} has exited`);
    if (this.execRuns.size >= MAX_EXEC_RUNS)
      throw new TtrpcError(
        Code.RESOURCE_EXHAUSTED,
        `exec ${execId}: container ${this.id} already has ${this.execRuns.size} execs, the most one wasm container may have at once in shared mode (each has a store of the container's memory limit); delete one first`,
      );
    const fifo = join(this.files.workDir, `exec-${execId}.stdin`);
    let run: InProcessInstance | undefined;
    const io = await runStdio(stdio, fifo, () => run?.hangUp());
    run = new InProcessInstance(`${this.id}/${execId}`, plan, this.view, io.fds, io.stdin, io.tty, this.o);
    run.memoryLimit = this.memoryLimit;
    run.cpu = { ...this.cpu };
    const started = run;
    this.execRuns.set(run, { fifo });
    try {
      await started.start();
    } catch (e) {
      await this.freeExec(started);
      throw e;
    }
    if (this.paused) started.setPaused(true);
    return started;
  }

  /** An exec's run is over and gone: killed if it still runs, its fds closed, its fifo removed. Once. */
  freeExec(run: InProcessInstance): Promise<void> {
    const e = this.execRuns.get(run);
    if (!e) return Promise.resolve();
    e.freed ??= run
      .delete(true)
      .catch((err) => this.o.log?.(`${run.id}: delete: ${String(err)}`))
      .finally(() => {
        rmSync(e.fifo, { force: true });
        this.execRuns.delete(run);
      });
    return e.freed;
  }

  /** Whether a run has ended (its exit decided). */
  get finished(): boolean {
    return this.ended;
  }

  private finish(status: number): void {
    if (this.ended) return;
    this.ended = true;
    this.handedOver.resolve();
    // The output ends with the run, before its exit is reported, as a process's fds close
    // before its parent can reap it; not at Delete. containerd's client (task.Delete in
    // client/task.go, since 1.6.22, 1.7.3 and in 2.x) waits for its copy of the output to
    // reach EOF before it sends Delete; earlier ones closed their read ends first, so the task
    // reports the exit once containerd has read what is left (src/task/output-fifos.ts). Held until
    // Delete, our copies would keep the output open for ever: CRI's exit handling (2.x's
    // handleContainerExit) and `ctr run --rm` would wait on it and never delete the task.
    // A run that never started leaves nothing to relay: its stdin goes too.
    // A terminal's output ends as its last slave fd goes: the run's with the run, ours (the
    // relay's source) once the relay has let go of it.
    this.closeFds(this.running ? [1, 2] : [0, 1, 2]);
    this.resolveExit({ status, at: new Date() });
  }

  /**
   * A killed run is reported on the engine's grace, and its thread may still be in a host call
   * (./unstick.ts). Our copies of its stdout and stderr go to the Unstick, which drains them if
   * that thread is stuck writing to one and closes them once the thread is over: the output
   * ends when the run is really gone, as a process's fds close only at its end. (Closed now, the
   * fd numbers the thread's write names could be anything's by the time it is looked at.)
   */
  private watchKilledThread(): void {
    if (this.killedAt === undefined) return;
    const ms = performance.now() - this.killedAt;
    this.o.log?.(`${this.id}: run ended ${ms.toFixed(2)} ms after the kill`);
    this.o.onKillExited?.(ms / 1000);
    const tid = this.control?.threadId?.();
    if (!tid || this.deleted) return;
    const out = [this.fds[1], this.fds[2]].filter((fd) => fd >= 0);
    this.fds[1] = -1;
    this.fds[2] = -1;
    this.unstick = new Unstick(tid, out, this.view, (m) => this.o.log?.(`${this.id}: ${m}`));
    void this.unstick.run();
  }

  /** Closes our copies of the stdio fds at `which` that are still open (-1 once closed). */
  private closeFds(which: (0 | 1 | 2)[]): void {
    for (const i of which) {
      const fd = this.fds[i];
      this.fds[i] = -1;
      if (fd >= 0) closeQuietly(fd);
    }
  }
}

/**
 * One exec of a wasm container (src/task/instance.ts InstanceExec): planned at Exec, run at
 * Start by its container (startExec), freed at its Delete or its container's. Its pid is the
 * daemon's, as the container's.
 */
class InProcessExec implements InstanceExec {
  private run?: InProcessInstance;
  private readonly exit = Promise.withResolvers<Exit>();
  readonly exited = this.exit.promise;

  constructor(
    private readonly container: InProcessInstance,
    private readonly execId: string,
    private readonly plan: RunPlan,
  ) {}

  async start(io: ProcessIo): Promise<number> {
    const run = await this.container.startExec(this.execId, this.plan, io);
    this.run = run;
    this.exit.resolve(run.exited);
    return run.pid;
  }

  /** The signal ends its run (128+signal), as the container's kill does. */
  kill(signal: number): void {
    const run = this.run;
    if (!run) throw new Error(`exec ${this.execId} has not started`);
    if (run.finished) throw new Error(`exec ${this.execId}: process already finished`);
    void run.kill(signal, false).catch(() => {}); // it raced us to its exit
  }

  /** Its thread, store, fds and fifo go (the Task service deletes an exec only once it has exited, or never ran). */
  delete(): Promise<void> {
    return this.run ? this.container.freeExec(this.run) : Promise.resolve();
  }
}

/** A run's stdio: containerd's fifos (own copies, stdin through a relay) or a terminal. */
interface RunStdio {
  fds: [number, number, number];
  stdin: StdinRelay;
  /** The pty's slave (fds[0]); -1 without a terminal. */
  tty: number;
}

/**
 * The stdio of a run from what the Task service gives: its own copies of containerd's fifos;
 * or, for a terminal process, a pty of its own whose master goes to the service's console (as
 * runc sends its to the console socket), and whose slave is the module's stdout and stderr.
 * Its stdin comes through a relay to `fifo` either way, from the terminal's slave for a
 * terminal (what its line discipline delivers: the typed lines, ^D as EOF): wasmtime reads a
 * stdin file on a thread of its runtime that outlives the run while a read waits, and would
 * hold the slave open (the terminal's output would never end) and a killed module's read
 * blocked; the relay ends both (./stdin-relay.ts). `onHangup`: the master closed (SIGHUP).
 */
async function runStdio(io: ProcessIo, fifo: string, onHangup: () => void): Promise<RunStdio> {
  let fds: [number, number, number];
  let tty = -1;
  if (io.console) {
    const { master, slave } = openPty();
    const [r, e] = setNonBlocking(slave);
    try {
      if (r < 0) throw new Error(`terminal: O_NONBLOCK: ${strerror(e)}`);
      io.console.handOver(master, onHangup);
    } catch (err) {
      if (r < 0) closeFd(master);
      closeFd(slave);
      throw err;
    }
    fds = [slave, -1, -1];
    tty = slave;
  } else if (io.stdio) fds = ownCopies(io.stdio);
  else throw new Error("neither stdio nor a console");
  try {
    await makeStdinFifo(fifo);
    return { fds, stdin: new StdinRelay(fds[0], fifo), tty };
  } catch (e) {
    for (const fd of fds) if (fd >= 0) closeQuietly(fd);
    throw e;
  }
}

/**
 * The Task service closes its fds once the runtime has "its own copies", as runc's child
 * has after create: each is reopened through /proc, a new open file description of the same
 * fifo. stdout/stderr read-write, so the fifo always has a reader and a write never raises
 * SIGPIPE in the daemon; stdin non-blocking so the open never waits for a writer.
 */
function ownCopies(stdio: [number, number, number]): [number, number, number] {
  const fds: number[] = [];
  try {
    fds.push(openSync(`/proc/self/fd/${stdio[0]}`, constants.O_RDONLY | constants.O_NONBLOCK));
    fds.push(openSync(`/proc/self/fd/${stdio[1]}`, constants.O_RDWR));
    fds.push(openSync(`/proc/self/fd/${stdio[2]}`, constants.O_RDWR));
  } catch (e) {
    for (const fd of fds) closeQuietly(fd);
    throw e;
  }
  return fds as [number, number, number];
}

/** The spec's open-file limit, bounded by the daemon's per-container cap; either may be absent. */
function maxOpenFiles(spec: number | undefined, daemon: number | undefined): { maxOpenFiles?: number } {
  const caps = [spec, daemon].filter((n): n is number => n !== undefined);
  return caps.length ? { maxOpenFiles: Math.min(...caps) } : {};
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

/**
 * The CPUs a run of this cpuset is confined to (undefined: none, it may share a pool), or
 * INVALID_ARGUMENT saying why the daemon cannot honour it (src/linux/cpuset.ts decides).
 */
function placeCpuset(what: string, cpuset: { cpus?: string; mems?: string } | undefined): number[] | undefined {
  if (!cpuset || (cpuset.cpus === undefined && cpuset.mems === undefined)) return undefined;
  try {
    return cpusetPlacement(cpuset, daemonPlaces()).cpus;
  } catch (e) {
    if (e instanceof CpusetError) throw new TtrpcError(Code.INVALID_ARGUMENT, `${what}: ${e.message}`);
    throw e;
  }
}

function sameCpus(a: number[] | undefined, b: number[] | undefined): boolean {
  return a === b || (!!a && !!b && a.length === b.length && a.every((c, i) => c === b[i]));
}

/** The parts of an OCI LinuxResources (JSON) a wasm container here obeys. */
function parseResources(id: string, json: string): { memory?: number; cpu?: CpuLimits; cpuset?: { cpus?: string; mems?: string } } {
  let r: { memory?: { limit?: unknown }; cpu?: Record<string, unknown> };
  try {
    r = JSON.parse(json) ?? {};
  } catch (e) {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `update ${id}: resources are not JSON (${(e as Error).message})`);
  }
  const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
  const out: { memory?: number; cpu?: CpuLimits; cpuset?: { cpus?: string; mems?: string } } = {};
  const memory = num(r.memory?.limit);
  if (memory !== undefined) {
    // A byte count, or -1 (none: the daemon's default applies). Anything else is refused rather
    // than wrapped into the store limiter's 64-bit words (where a huge value became "none").
    if (memory !== -1 && (!Number.isSafeInteger(memory) || memory < 0))
      throw new TtrpcError(Code.INVALID_ARGUMENT, `update ${id}: memory.limit ${memory} is not a byte count (or -1)`);
    out.memory = memory;
  }
  const cpu: CpuLimits = {};
  for (const k of ["quota", "period", "shares"] as const) {
    const v = num(r.cpu?.[k]);
    if (v !== undefined) cpu[k] = v;
  }
  if (Object.keys(cpu).length) out.cpu = cpu;
  // An empty list leaves the cpuset as it is, as runc update does.
  const cpuset: { cpus?: string; mems?: string } = {};
  for (const k of ["cpus", "mems"] as const) {
    const v = r.cpu?.[k];
    if (typeof v === "string" && v !== "") cpuset[k] = v;
  }
  if (Object.keys(cpuset).length) out.cpuset = cpuset;
  return out;
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}

/** The error for what a wasm container in the daemon cannot do (Exec, a terminal). */
export function notInShared(id: string, what: string): TtrpcError {
  return new TtrpcError(
    Code.UNIMPLEMENTED,
    `${what} of wasm container ${id} is not supported in shared mode (it runs in the daemon, not in a process of its own)`,
  );
}
