// One container's life: created → running ⇄ paused → stopped → deleted. Every step is
// the OCI runtime's; we keep the state containerd asks about and the exit it waits for.

import { mkdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { SIGNAL_READY_TIMEOUT_MS, STATUS_UNKNOWN } from "../common/constants.ts";
import { type Runc, RuncError, type RuncStats, removeQuietly } from "../linux/runc.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import { Status } from "./gen/containerd/types/task/task.ts";
import { Stdio, type StdioPaths } from "./stdio.ts";

export interface Exit {
  status: number;
  at: Date;
}

/** What the container needs from the shim around it. */
export interface ContainerHost {
  runc: Runc;
  /** Where the shim keeps per-container files (derived bundles, pid files, runtime logs). */
  stateDir: string;
  /** Resolves when `pid` exits, with its status (128+signal when killed). */
  watchExit(pid: number): Promise<Exit>;
  /** Mounts containerd's rootfs mounts on `<bundle>/rootfs`; returns the undo. */
  mountRootfs(bundle: string, mounts: RootfsMount[]): Promise<() => void>;
  /** Turns containerd's bundle into the one the runtime runs (wasm: our executor). */
  prepareBundle(id: string, bundle: string, workDir: string): Promise<PreparedBundle>;
  onExit(c: Container): void;
}

export interface PreparedBundle {
  runtimeBundle: string;
  kind: "wasm" | "native";
  /** Work that may overlap the runtime's create (filling the compile cache); never fails. */
  warm?: () => Promise<void>;
}

export interface RootfsMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export interface CreateOptions extends StdioPaths {
  id: string;
  bundle: string;
  rootfs: RootfsMount[];
  terminal: boolean;
}

export class Container {
  status: Status = Status.CREATED;
  pid = 0;
  exit: Exit | null = null;
  kind: "wasm" | "native" = "native";
  /** /proc/<pid>/exe of the runtime's init before `start` execs the container's process. */
  private runtimeInitExe = "";
  /** Resolves when the init process has exited. */
  readonly exited: Promise<Exit>;
  private resolveExit!: (e: Exit) => void;
  private cleanups: (() => void)[] = [];
  private deleting = false;

  private constructor(
    readonly host: ContainerHost,
    readonly opts: CreateOptions,
  ) {
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
  }

  get id(): string {
    return this.opts.id;
  }

  static async create(host: ContainerHost, opts: CreateOptions): Promise<Container> {
    if (opts.terminal) throw new TtrpcError(Code.UNIMPLEMENTED, "terminal=true (a tty for the container) is not supported yet");
    const c = new Container(host, opts);
    const workDir = join(host.stateDir, opts.id);
    try {
      mkdirSync(workDir, { recursive: true });
      c.cleanups.push(() => removeQuietly(workDir));
      if (opts.rootfs.length > 0) c.cleanups.unshift(await host.mountRootfs(opts.bundle, opts.rootfs));
      const prepared = await host.prepareBundle(opts.id, opts.bundle, workDir);
      c.kind = prepared.kind;
      const stdio = Stdio.open(opts);
      try {
        const created = host.runc.create(
          opts.id,
          prepared.runtimeBundle,
          join(workDir, "init.pid"),
          stdio.fds,
          join(workDir, "runtime.log"),
        );
        // Both run at once: the runtime in its process, compiling on a thread of ours.
        const [pid] = await Promise.all([created, prepared.warm?.()]);
        c.pid = pid;
        c.runtimeInitExe = exeOf(c.pid);
      } finally {
        stdio.close();
      }
    } catch (e) {
      await c.cleanup();
      throw failure("create", e);
    }
    host.watchExit(c.pid).then(
      (exit) => c.exitedWith(exit),
      // Losing sight of the process must not lose the container (or the shim, through an
      // unhandled rejection): report it gone, with the status a shell gives "unknown".
      () => c.exitedWith({ status: STATUS_UNKNOWN, at: new Date() }),
    );
    return c;
  }

  async start(): Promise<number> {
    if (this.deleting) throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${this.id} is being deleted`);
    if (this.status !== Status.CREATED)
      throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${this.id} is ${Status[this.status]}, not CREATED`);
    try {
      await this.host.runc.start(this.id);
    } catch (e) {
      throw failure("start", e);
    }
    if (this.status === Status.CREATED) this.status = Status.RUNNING;
    return this.pid;
  }

  async kill(signal: number, all: boolean): Promise<void> {
    if (this.exit !== null && !all) throw new TtrpcError(Code.NOT_FOUND, `process already finished: container ${this.id}`);
    // A wasm container's init is our executor, PID 1 of its pid namespace: until it has
    // installed its handlers (tens of ms after `runc start`; before its exec the pid is still
    // runc's init, which catches everything), the kernel silently drops a
    // SIGTERM/SIGINT/SIGHUP/SIGQUIT sent to it, and the task would run on although Kill
    // succeeded (seen: 3 of 8 `ctr run -d` + immediate `ctr task kill`). Wait for the handler.
    if (this.kind === "wasm" && this.status === Status.RUNNING && EXECUTOR_HANDLES.has(signal)) {
      await untilCaught(this.pid, this.runtimeInitExe, signal, () => this.exit !== null);
    }
    try {
      await this.host.runc.kill(this.id, signal, all);
    } catch (e) {
      if (this.exit !== null) return; // it raced us to the exit
      throw failure("kill", e);
    }
  }

  async pause(): Promise<void> {
    if (this.status !== Status.RUNNING) throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${this.id} is not running`);
    this.status = Status.PAUSING;
    try {
      await this.host.runc.pause(this.id);
      this.status = Status.PAUSED;
    } catch (e) {
      this.status = Status.RUNNING;
      throw failure("pause", e);
    }
  }

  async resume(): Promise<void> {
    if (this.status !== Status.PAUSED) throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${this.id} is not paused`);
    try {
      await this.host.runc.resume(this.id);
      this.status = this.exit === null ? Status.RUNNING : Status.STOPPED;
    } catch (e) {
      throw failure("resume", e);
    }
  }

  async pids(): Promise<number[]> {
    if (this.exit !== null) return [];
    try {
      return await this.host.runc.ps(this.id);
    } catch (e) {
      throw failure("ps", e);
    }
  }

  async stats(): Promise<RuncStats> {
    if (this.exit !== null) throw new TtrpcError(Code.NOT_FOUND, `container ${this.id} has exited: no cgroup to measure`);
    try {
      return await this.host.runc.stats(this.id);
    } catch (e) {
      throw failure("stats", e);
    }
  }

  /** Removes the container: it must have exited, or never started (then it is killed). */
  async delete(): Promise<Exit> {
    if (this.status === Status.RUNNING || this.status === Status.PAUSED || this.status === Status.PAUSING) {
      throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${this.id} is ${Status[this.status]}: kill it first`);
    }
    this.deleting = true;
    if (this.exit === null) {
      // Created but never started: the runtime's init is still waiting.
      await this.host.runc.delete(this.id, true).catch(() => {});
      await Promise.race([this.exited, Bun.sleep(5000)]);
    }
    await this.cleanup();
    return this.exit ?? { status: 137, at: new Date() };
  }

  private exitedWith(exit: Exit): void {
    this.exit = exit;
    this.status = Status.STOPPED;
    this.resolveExit(exit);
    this.host.onExit(this);
  }

  private async cleanup(): Promise<void> {
    await this.host.runc.delete(this.id, true).catch(() => {});
    for (const undo of this.cleanups.splice(0)) {
      try {
        undo();
      } catch {}
    }
  }
}

/** Signals the executor handles (src/engines/executor.ts HANDLED): HUP, INT, QUIT, TERM. */
const EXECUTOR_HANDLES = new Set([1, 2, 3, 15]);

/**
 * Resolves once `pid` has exec'd the container's process (its exe is no longer the runtime's
 * init, `initExe`) and that process catches `signal` (its bit in /proc/<pid>/status SigCgt);
 * or once it is gone, or `done()`, or after `timeoutMs` (then the caller sends anyway).
 */
async function untilCaught(
  pid: number,
  initExe: string,
  signal: number,
  done: () => boolean,
  timeoutMs = SIGNAL_READY_TIMEOUT_MS,
): Promise<void> {
  const bit = 1n << BigInt(signal - 1);
  const deadline = Date.now() + timeoutMs;
  while (!done() && Date.now() < deadline) {
    let caught: bigint;
    try {
      const exe = readlinkSync(`/proc/${pid}/exe`);
      const m = /^SigCgt:\s*([0-9a-fA-F]+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      if (!m) return;
      caught = exe === initExe ? 0n : BigInt(`0x${m[1]}`);
    } catch {
      return; // gone
    }
    if ((caught & bit) !== 0n) return;
    await Bun.sleep(5);
  }
}

function exeOf(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return "";
  }
}

/** A runtime failure as the caller should see it: which step, and the runtime's own words. */
function failure(step: string, e: unknown): TtrpcError {
  if (e instanceof TtrpcError) return e;
  if (e instanceof RuncError) return new TtrpcError(Code.UNKNOWN, `${step}: ${e.message}`);
  return new TtrpcError(Code.UNKNOWN, `${step}: ${e instanceof Error ? e.message : String(e)}`);
}
