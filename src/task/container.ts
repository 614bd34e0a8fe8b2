// One container: its task's state (src/task/state.ts decides what may happen to it), its
// init process and exit, its exec processes, and the runtime steps behind each call. Every step is the OCI
// runtime's; nothing here blocks the event loop for long (no synchronous spawn), since one
// process may serve the calls of many pods at once. Its few small files (the work dir, an
// exec's spec) are written with synchronous calls, microseconds each: asynchronous fs calls
// would start Bun's thread pool, whose threads then stay for the server's life (issue 8).

import { mkdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { STATUS_UNKNOWN } from "../common/constants.ts";
import { SIGNALS } from "../common/signals.ts";
import { ConsoleSocket } from "../linux/console.ts";
import type { OomWatch } from "../linux/oom.ts";
import { RuncError } from "../linux/runc.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import { type ExecOptions, ExecProcess } from "./exec.ts";
import type { Exit, NamespaceHost, OciProcess, OciRuntime, RootfsMount, TaskHost } from "./host.ts";
import { type RuntimeOptions, saveRuntimeOptions } from "./runtime-options.ts";
import { untilSignalHandled, WASM_HANDLED_SIGNALS } from "./signal-ready.ts";
import {
  afterCall,
  afterExit,
  begin,
  checkExec,
  EXCLUSIVE,
  EXEC_EXCLUSIVE,
  type ExecCall,
  execAfterCall,
  execAfterExit,
  type TaskCall,
  type TaskState,
} from "./state.ts";
import { Stdio, type StdioPaths } from "./stdio.ts";
import { Terminal } from "./terminal.ts";

/** How long the runtime may take to send a terminal's master once its create or exec returned. */
const CONSOLE_TIMEOUT_MS = 10_000;

export interface CreateOptions extends StdioPaths {
  /** containerd's namespace of the container (with the id, its key). */
  namespace: string;
  id: string;
  bundle: string;
  rootfs: RootfsMount[];
  terminal: boolean;
  /** containerd's runtime options for this container (src/task/runtime-options.ts). */
  runtimeOptions?: RuntimeOptions | null;
}

/** One step of undoing a Create, named for the log when it fails. */
interface Undo {
  what: string;
  run: () => Promise<void>;
  /**
   * Skipped (kept for a retry) when an earlier step of the runtime failed: the work dir holds
   * the runtime options a `shim delete` needs to retry that runtime's delete (another binary,
   * another root): removed, the runtime's container would be left to no one.
   */
  needsRuntimeGone?: boolean;
  /** This step is the runtime's delete. */
  runtime?: boolean;
}

export class Container {
  state: TaskState = "created";
  /** The exclusive call (start, pause, resume, delete) under way, if any. */
  busy: TaskCall | null = null;
  pid = 0;
  exit: Exit | null = null;
  kind: "wasm" | "native" = "native";
  /** Run in the host's own process (shared mode): see PreparedBundle.inProcess. */
  inProcess = false;
  /** Resolves when the init process has exited. */
  readonly exited: Promise<Exit>;
  /** Set while Delete runs: a second Delete joins it. */
  deleting: Promise<{ exit: Exit; failed: string[] }> | null = null;
  /** The exec processes, by exec id (added by Exec, removed by their Delete). */
  readonly execs = new Map<string, ExecProcess>();
  /**
   * Set as soon as the init process has exited, while its exit waits for the execs still
   * running (the init's exit is reported last): no exec may start from then on.
   */
  initExited = false;
  /** The pty of a terminal=true task. */
  terminal: Terminal | null = null;
  /** The bundle the runtime runs (for a wasm container, the derived one). */
  runtimeBundle = "";
  /** <stateDir>/<id>: the derived bundle, pid files, runtime logs, exec process files. */
  private workDir = "";
  /** The memory cgroup's OOM kills, when the host watches them (src/linux/oom.ts). */
  private oom: OomWatch | null = null;
  /** /proc/<pid>/exe of the runtime's init before `start` execs the container's process. */
  private runtimeInitExe = "";
  private resolveExit!: (e: Exit) => void;
  /** What Create set up, newest first; what Delete could not undo stays for a retry. */
  private undos: Undo[] = [];

  private constructor(
    readonly opts: CreateOptions,
    private readonly runtime: OciRuntime,
    private readonly host: TaskHost,
    private readonly onExit: (c: Container) => void,
    private readonly onExecExit: (c: Container, e: ExecProcess) => void,
  ) {
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
  }

  get id(): string {
    return this.opts.id;
  }

  get namespace(): string {
    return this.opts.namespace;
  }

  /**
   * Mounts the rootfs, prepares the runtime bundle and has the runtime create the container.
   * On failure everything done so far is undone (failures of that logged) and the error thrown.
   */
  static async create(
    host: TaskHost,
    ns: NamespaceHost,
    opts: CreateOptions,
    onExit: (c: Container) => void,
    onExecExit: (c: Container, e: ExecProcess) => void = () => {},
    onOom: (c: Container) => void = () => {},
  ): Promise<Container> {
    const runtime = opts.runtimeOptions && ns.runtimeWith ? ns.runtimeWith(opts.runtimeOptions) : ns.runtime;
    const c = new Container(opts, runtime, host, onExit, onExecExit);
    const workDir = join(ns.stateDir, opts.id);
    c.workDir = workDir;
    try {
      await makeWorkDir(workDir);
      c.undos.unshift({
        what: `remove ${workDir}`,
        run: async () => rmSync(workDir, { recursive: true, force: true }),
        needsRuntimeGone: true,
      });
      // Before the runtime holds anything: a `shim delete` after this server dies must find
      // the runtime that created the container (src/task/runtime-options.ts).
      if (opts.runtimeOptions && runtime !== ns.runtime) await saveRuntimeOptions(workDir, opts.runtimeOptions);
      if (opts.rootfs.length > 0) {
        const unmount = await host.mountRootfs(opts.bundle, opts.rootfs);
        c.undos.unshift({ what: `unmount ${opts.bundle}/rootfs`, run: unmount });
      }
      const prepared = await host.prepareBundle(opts.id, opts.bundle, workDir);
      c.kind = prepared.kind;
      c.runtimeBundle = prepared.runtimeBundle;
      c.inProcess = prepared.inProcess === true;
      const { discard } = prepared;
      if (discard) c.undos.unshift({ what: "discard the prepared bundle", run: async () => discard() });
      // A terminal process gets the pty the runtime makes; others get containerd's fifos.
      const console = opts.terminal ? await ConsoleSocket.open() : null;
      const stdio = console ? null : await Stdio.open(opts, { id: opts.id, namespace: opts.namespace });
      const logger = stdio?.logger;
      // Stopped after the runtime's delete (undos run last-added first): by then its input is over.
      if (logger) c.undos.unshift({ what: "stop the logging program", run: () => logger.stop() });
      try {
        // From here the runtime may hold state for the id: delete it first on the way out.
        c.undos.unshift({ what: "runtime delete", run: () => c.runtime.delete(opts.id, true), runtime: true });
        const created = c.runtime.create(
          opts.id,
          prepared.runtimeBundle,
          join(workDir, "init.pid"),
          stdio?.fds ?? null,
          join(workDir, "runtime.log"),
          console?.path,
        );
        // Both run at once: the runtime in its process, compiling on a thread of ours. A
        // failed create still waits for the compile and its cache write (warm never fails):
        // answered at once, containerd's Shutdown could end the server in the middle of that
        // write and leave its tmp file in the cache.
        const warming = prepared.warm?.();
        const pid = await created.finally(() => warming);
        c.pid = pid;
        c.runtimeInitExe = await exeOf(pid);
        // The init is in the container's cgroup from create on: its baseline count now.
        c.oom = (await host.watchOom?.(pid, () => onOom(c))) ?? null;
        c.undos.unshift({ what: "stop watching for OOM kills", run: async () => c.oom?.close() });
        if (console) {
          const terminal = await Terminal.attach(await console.receiveMaster(CONSOLE_TIMEOUT_MS), opts);
          c.terminal = terminal;
          c.undos.unshift({ what: "close the terminal", run: () => terminal.close() });
        }
      } finally {
        await stdio?.close();
        await console?.close();
      }
    } catch (e) {
      const failed = await c.cleanup();
      for (const f of failed) host.log(`create ${opts.namespace}/${opts.id}: undoing after a failed create: ${f}`, "error");
      throw failure("create", e);
    }
    return c;
  }

  /**
   * Starts watching the init process for its exit. The caller does it once it has announced
   * the container (/tasks/create): an init already gone is reported at once, and its
   * /tasks/exit must not come first.
   */
  watchExit(host: TaskHost): void {
    (this.runtime.exitOf?.(this.id) ?? host.watchExit(this.pid)).then(
      (exit) => void this.exitedWith(exit),
      // Losing sight of the process must not lose the container (or the shim, through an
      // unhandled rejection): report it gone, with the status a shell gives "unknown".
      (e) => {
        host.log(`watching ${this.namespace}/${this.id} (pid ${this.pid}): ${String(e)}`, "error");
        void this.exitedWith({ status: STATUS_UNKNOWN, at: new Date() });
      },
    );
  }

  /**
   * Once exited: whether the kernel OOM-killed a process of the container's cgroup; null when
   * nobody watches (answered without waiting). Never rejects: an unreadable cgroup is "no".
   */
  oomKilled(): Promise<boolean> | null {
    const oom = this.oom;
    if (oom === null) return null;
    // The last question: the live notification ends with it.
    return oom
      .killed()
      .catch(() => false)
      .finally(() => oom.close());
  }

  /**
   * Runs `step` as `call` if the state table allows it now, and moves the state to where
   * the table says once it succeeds (an exit meanwhile wins: see afterCall).
   */
  async transition<T>(call: TaskCall, step: () => Promise<T>, opts: { all?: boolean } = {}): Promise<T> {
    const target = begin(this.id, this.state, call, this.busy, opts);
    const exclusive = EXCLUSIVE.has(call);
    if (exclusive) this.busy = call;
    try {
      const out = await step();
      this.state = afterCall(this.state, target);
      return out;
    } finally {
      if (exclusive) this.busy = null;
    }
  }

  async start(): Promise<void> {
    try {
      await this.runtime.start(this.id);
    } catch (e) {
      throw failure("start", e);
    }
  }

  async kill(signal: number, all: boolean): Promise<void> {
    // A wasm container's init is our executor, PID 1 of its pid namespace: until it has
    // installed its handlers (tens of ms after `runc start`; before its exec the pid is still
    // runc's init, which catches everything), the kernel silently drops a
    // SIGTERM/SIGINT/SIGHUP/SIGQUIT sent to it, and the task would run on although Kill
    // succeeded (seen: 3 of 8 `ctr run -d` + immediate `ctr task kill`). Wait for the handler.
    if (this.kind === "wasm" && !this.inProcess && this.state === "running" && WASM_HANDLED_SIGNALS.has(signal)) {
      await untilSignalHandled(this.pid, this.runtimeInitExe, signal, () => this.exit !== null);
    }
    try {
      await this.runtime.kill(this.id, signal, all);
    } catch (e) {
      if (this.exit !== null) return; // it raced us to the exit
      throw failure("kill", e);
    }
  }

  async pause(): Promise<void> {
    try {
      await this.runtime.pause(this.id);
    } catch (e) {
      throw failure("pause", e);
    }
  }

  async resume(): Promise<void> {
    try {
      await this.runtime.resume(this.id);
    } catch (e) {
      throw failure("resume", e);
    }
  }

  async pids(): Promise<number[]> {
    if (this.exit !== null) return [];
    try {
      return await this.runtime.ps(this.id);
    } catch (e) {
      throw failure("ps", e);
    }
  }

  async stats() {
    try {
      return await this.runtime.stats(this.id);
    } catch (e) {
      throw failure("stats", e);
    }
  }

  async update(resources: string): Promise<void> {
    try {
      await this.runtime.update(this.id, resources);
    } catch (e) {
      throw failure("update", e);
    }
  }

  /**
   * Removes the container: the table allows it once exited or never started (then the
   * runtime's waiting init is removed first and its exit awaited). Every undo step is tried;
   * resolves with the exit and what could not be cleaned up (those steps stay for a retry).
   */
  async remove(log: TaskHost["log"], exitWaitMs: number, killedStatus: number): Promise<{ exit: Exit; failed: string[] }> {
    if (this.exit === null) {
      // Created but never started: the runtime's init is still waiting.
      try {
        await this.runtime.delete(this.id, true);
      } catch (e) {
        log(`delete ${this.namespace}/${this.id}: runtime delete of the created container: ${String(e)}`, "warning");
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.exited, new Promise((r) => (timer = setTimeout(r, exitWaitMs)))]);
      clearTimeout(timer);
    }
    for (const e of this.execs.values()) await e.terminal?.close();
    const failed = await this.cleanup();
    return { exit: this.exit ?? { status: killedStatus, at: new Date() }, failed };
  }

  /**
   * Runs every undo step; keeps and describes the ones that failed, and those that must wait
   * for a runtime delete that failed (Undo.needsRuntimeGone).
   */
  private async cleanup(): Promise<string[]> {
    const failed: string[] = [];
    const kept: Undo[] = [];
    let runtimeHolds = false;
    for (const undo of this.undos.splice(0)) {
      if (undo.needsRuntimeGone && runtimeHolds) {
        failed.push(`${undo.what}: kept until the runtime has deleted the container`);
        kept.push(undo);
        continue;
      }
      try {
        await undo.run();
      } catch (e) {
        failed.push(`${undo.what}: ${e instanceof Error ? e.message : String(e)}`);
        kept.push(undo);
        if (undo.runtime) runtimeHolds = true;
      }
    }
    this.undos = kept;
    return failed;
  }

  private async exitedWith(exit: Exit): Promise<void> {
    this.initExited = true;
    // As runc-v2: the init's exit is the container's last. Execs die with the init in a pid
    // namespace of the container's own; in a shared one they would not: either way they are
    // killed, and the init's exit waits for theirs.
    const live = [...this.execs.values()].filter((e) => e.live);
    for (const e of live) {
      try {
        if (e.pid > 0 && e.exit === null) this.host.kill(e.pid, SIGNALS.SIGKILL);
      } catch {} // gone already: its exit is on its way
    }
    if (live.length > 0) await Promise.all(live.map((e) => e.exited));
    this.exit = exit;
    this.state = afterExit(this.state);
    this.resolveExit(exit);
    this.onExit(this);
  }

  // --- exec processes ----------------------------------------------------------------------

  /**
   * Exec: adds exec `opts.execId` in `created` with its process prepared for the runtime (a
   * wasm module's args rewritten to our executor) and written to the work directory. The
   * caller has checked the task table; a second exec of the same id is ALREADY_EXISTS, also
   * while the first is still being prepared.
   */
  async addExec(opts: ExecOptions, process: OciProcess): Promise<ExecProcess> {
    if (this.execs.has(opts.execId)) {
      throw new TtrpcError(Code.ALREADY_EXISTS, `exec ${opts.execId} in container ${this.id}: already exists`);
    }
    const e = new ExecProcess(opts);
    this.execs.set(opts.execId, e);
    try {
      const prepared = await this.host.prepareExec(
        { id: this.id, bundle: this.opts.bundle, runtimeBundle: this.runtimeBundle, kind: this.kind },
        { ...process, terminal: opts.terminal },
      );
      e.kind = prepared.kind;
      e.process = prepared.process;
      writeFileSync(this.execFile(e, "json"), JSON.stringify(prepared.process), { mode: 0o600 });
    } catch (err) {
      this.execs.delete(opts.execId);
      throw failure("exec", err);
    }
    return e;
  }

  /** Runs `step` as exec call `call` if the exec table (and the task) allow it now. */
  async execTransition<T>(e: ExecProcess, call: ExecCall, step: () => Promise<T>): Promise<T> {
    const target = checkExec(this.id, e.id, this.state, this.initExited, e.state, call, e.busy);
    const exclusive = EXEC_EXCLUSIVE.has(call);
    if (exclusive) e.busy = call;
    try {
      const out = await step();
      e.state = execAfterCall(e.state, target);
      return out;
    } finally {
      if (exclusive) e.busy = null;
    }
  }

  /** Start of an exec: `runtime exec --detach`, its terminal if it has one, and its exit watched. */
  async startExec(e: ExecProcess): Promise<void> {
    const console = e.opts.terminal ? await ConsoleSocket.open() : null;
    let stdio: Stdio | null = null;
    try {
      stdio = console ? null : await Stdio.open(e.opts);
      e.pid = await this.runtime.exec(
        this.id,
        this.execFile(e, "json"),
        this.execFile(e, "pid"),
        stdio?.fds ?? null,
        this.execFile(e, "log"),
        console?.path,
      );
      this.watchExec(e);
      if (console) e.terminal = await Terminal.attach(await console.receiveMaster(CONSOLE_TIMEOUT_MS), e.opts);
    } catch (err) {
      // Running without its terminal it would be unreachable: it goes (its exit is watched).
      if (e.pid > 0) {
        try {
          this.host.kill(e.pid, SIGNALS.SIGKILL);
        } catch {} // gone already: its exit is on its way
      }
      // Never started: Wait gets an answer and Delete may remove it (runc-v2 publishes no exit).
      else e.exitedWith({ status: STATUS_UNKNOWN, at: new Date() }, "stopped");
      throw failure("exec", err);
    } finally {
      await stdio?.close();
      await console?.close();
    }
  }

  /** Kill of an exec: the signal goes to its process (as runc-v2: not through the runtime). */
  killExec(e: ExecProcess, signal: number): void {
    try {
      this.host.kill(e.pid, signal);
    } catch (err) {
      if (e.exit !== null) throw new TtrpcError(Code.NOT_FOUND, `kill exec ${e.id}: process already finished`);
      throw failure("kill", err);
    }
  }

  /** Delete of an exec: its terminal and files go, and it is forgotten. */
  async deleteExec(e: ExecProcess): Promise<Exit | null> {
    await e.terminal?.close();
    e.terminal = null;
    for (const x of ["json", "pid", "log"] as const) rmSync(this.execFile(e, x), { force: true });
    this.execs.delete(e.id);
    const exit = e.exit;
    // A Wait on an exec that never ran gets an answer too: it never will run now.
    if (exit === null) e.exitedWith({ status: STATUS_UNKNOWN, at: new Date() }, "deleted");
    return exit;
  }

  private watchExec(e: ExecProcess): void {
    const exited = (exit: Exit) => {
      if (!e.exitedWith(exit, execAfterExit(e.state))) return;
      // The master reads EIO once the process side is gone: then its fds can go.
      const t = e.terminal;
      if (t) void t.drained.then(() => t.close());
      this.onExecExit(this, e);
    };
    this.host.watchExit(e.pid).then(exited, (err) => {
      this.host.log(`watching exec ${this.namespace}/${this.id}/${e.id} (pid ${e.pid}): ${String(err)}`, "error");
      exited({ status: STATUS_UNKNOWN, at: new Date() });
    });
  }

  private execFile(e: ExecProcess, ext: "json" | "pid" | "log"): string {
    return join(this.workDir, `exec-${e.id}.${ext}`);
  }
}

async function exeOf(pid: number): Promise<string> {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return ""; // gone already, or not ours to read: untilSignalHandled then waits on SigCgt only
  }
}

/** A runtime failure as the caller should see it: which step, and the runtime's own words. */
function failure(step: string, e: unknown): TtrpcError {
  if (e instanceof TtrpcError) return e;
  if (e instanceof RuncError) return new TtrpcError(Code.UNKNOWN, `${step}: ${e.message}`);
  return new TtrpcError(Code.UNKNOWN, `${step}: ${e instanceof Error ? e.message : String(e)}`);
}

/**
 * mkdir -p of a container's work dir. A `shim delete` of the namespace's last container removes
 * the namespace folder once empty (src/runtime-v2/delete.ts), and one that runs between the
 * two levels of this mkdir makes the inner one fail with ENOENT (seen with 4 containers of one
 * namespace cycling at once): the folder is simply made again.
 */
async function makeWorkDir(dir: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      mkdirSync(dir, { recursive: true });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT" || attempt >= 10) throw e;
    }
  }
}
