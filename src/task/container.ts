// One container: its task's state (src/task/state.ts decides what may happen to it), its
// init process and exit, and the runtime steps behind each call. Every step is the OCI
// runtime's; nothing here blocks the event loop (no synchronous spawn or file I/O), since
// one process may serve the calls of many pods at once.

import { mkdir, readlink, rm } from "node:fs/promises";
import { join } from "node:path";
import { STATUS_UNKNOWN } from "../common/constants.ts";
import { RuncError } from "../linux/runc.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import type { Exit, NamespaceHost, OciRuntime, RootfsMount, TaskHost } from "./host.ts";
import { untilSignalHandled, WASM_HANDLED_SIGNALS } from "./signal-ready.ts";
import { afterCall, afterExit, begin, EXCLUSIVE, type TaskCall, type TaskState } from "./state.ts";
import { Stdio, type StdioPaths } from "./stdio.ts";

export interface CreateOptions extends StdioPaths {
  /** containerd's namespace of the container (with the id, its key). */
  namespace: string;
  id: string;
  bundle: string;
  rootfs: RootfsMount[];
  terminal: boolean;
}

/** One step of undoing a Create, named for the log when it fails. */
interface Undo {
  what: string;
  run: () => Promise<void>;
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
  deleting: Promise<Exit> | null = null;
  /** /proc/<pid>/exe of the runtime's init before `start` execs the container's process. */
  private runtimeInitExe = "";
  private resolveExit!: (e: Exit) => void;
  /** What Create set up, newest first; what Delete could not undo stays for a retry. */
  private undos: Undo[] = [];

  private constructor(
    readonly opts: CreateOptions,
    private readonly runtime: OciRuntime,
    private readonly onExit: (c: Container) => void,
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
  static async create(host: TaskHost, ns: NamespaceHost, opts: CreateOptions, onExit: (c: Container) => void): Promise<Container> {
    if (opts.terminal) throw new TtrpcError(Code.UNIMPLEMENTED, "terminal=true (a tty for the container) is not supported yet");
    const c = new Container(opts, ns.runtime, onExit);
    const workDir = join(ns.stateDir, opts.id);
    try {
      await mkdir(workDir, { recursive: true });
      c.undos.unshift({ what: `remove ${workDir}`, run: () => rm(workDir, { recursive: true, force: true }) });
      if (opts.rootfs.length > 0) {
        const unmount = await host.mountRootfs(opts.bundle, opts.rootfs);
        c.undos.unshift({ what: `unmount ${opts.bundle}/rootfs`, run: unmount });
      }
      const prepared = await host.prepareBundle(opts.id, opts.bundle, workDir);
      c.kind = prepared.kind;
      c.inProcess = prepared.inProcess === true;
      const stdio = await Stdio.open(opts);
      try {
        // From here the runtime may hold state for the id: delete it first on the way out.
        c.undos.unshift({ what: "runtime delete", run: () => c.runtime.delete(opts.id, true) });
        const created = c.runtime.create(
          opts.id,
          prepared.runtimeBundle,
          join(workDir, "init.pid"),
          stdio.fds,
          join(workDir, "runtime.log"),
        );
        // Both run at once: the runtime in its process, compiling on a thread of ours.
        const [pid] = await Promise.all([created, prepared.warm?.()]);
        c.pid = pid;
        c.runtimeInitExe = await exeOf(pid);
      } finally {
        await stdio.close();
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
      (exit) => this.exitedWith(exit),
      // Losing sight of the process must not lose the container (or the shim, through an
      // unhandled rejection): report it gone, with the status a shell gives "unknown".
      (e) => {
        host.log(`watching ${this.namespace}/${this.id} (pid ${this.pid}): ${String(e)}`, "error");
        this.exitedWith({ status: STATUS_UNKNOWN, at: new Date() });
      },
    );
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
    const failed = await this.cleanup();
    return { exit: this.exit ?? { status: killedStatus, at: new Date() }, failed };
  }

  /** Runs every undo step; keeps and describes the ones that failed. */
  private async cleanup(): Promise<string[]> {
    const failed: string[] = [];
    const kept: Undo[] = [];
    for (const undo of this.undos.splice(0)) {
      try {
        await undo.run();
      } catch (e) {
        failed.push(`${undo.what}: ${e instanceof Error ? e.message : String(e)}`);
        kept.push(undo);
      }
    }
    this.undos = kept;
    return failed;
  }

  private exitedWith(exit: Exit): void {
    this.exit = exit;
    this.state = afterExit(this.state);
    this.resolveExit(exit);
    this.onExit(this);
  }
}

async function exeOf(pid: number): Promise<string> {
  try {
    return await readlink(`/proc/${pid}/exe`);
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
