// A container under runc, as the task's Instance (src/task/instance.ts): every container of
// normal mode, and a shared-mode daemon's native ones (the pod's pause, sidecars). runc builds
// the container; its init and exec processes are reparented to us (the child subreaper), so
// their exits come from pidfds (src/linux/exit-watcher.ts) and the cgroup's OOM kills from its
// counter (src/linux/oom.ts). A wasm container's init is our executor, which must have its
// signal handlers in place before a catchable signal can reach it (src/linux/signal-ready.ts).
// Its files (pid files, runc's logs, an exec's process) go in the container's work dir; they
// are written and removed with synchronous calls, microseconds each (docs/ARCHITECTURE.md, "Bun's thread pool").

import { readlinkSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { STATUS_UNKNOWN } from "../common/constants.ts";
import { SIGNALS } from "../common/signals.ts";
import { traced } from "../common/trace.ts";
import type { Engine } from "../engines/engine.ts";
import type { ExitWatcher } from "../linux/exit-watcher.ts";
import { type OomWatch, watchOom } from "../linux/oom.ts";
import type { Runc, RuncStats } from "../linux/runc.ts";
import { untilSignalHandled } from "../linux/signal-ready.ts";
import { prepareExecProcess } from "../oci/exec-process.ts";
import type { Exit, Instance, InstanceExec, InstanceRequest, OciProcess, ProcessIo } from "../task/instance.ts";
import type { Logger } from "../task/task-host.ts";

/** What a runc instance needs of the process around it. */
export interface RuncParts {
  /** The subreaper's exit watcher (and the poller of OOM notifications). */
  watcher: ExitWatcher;
  /** Exec: a wasm module's args become our executor's. */
  engine: Engine;
  log: Logger;
  /** Wraps a step to time it in the debug log (normal mode's -debug); absent: runs it as is. */
  step?: <T>(fn: () => T, what: string) => T;
}

/** The bundle runc runs (for a wasm container, the derived one with our executor), and what it runs. */
export interface RuncBundle {
  runtimeBundle: string;
  kind: "wasm" | "native";
  /** Work that may overlap runc's create (filling the compile cache); never fails. */
  warm?: () => Promise<void>;
}

/** Signals the executor handles (src/engines/executor.ts): HUP, INT, QUIT, TERM. */
const WASM_HANDLED_SIGNALS: ReadonlySet<number> = new Set([SIGNALS.SIGHUP, SIGNALS.SIGINT, SIGNALS.SIGQUIT, SIGNALS.SIGTERM]);

/** `runc create` of `bundle` for `req`; its init waits for start. */
export async function createRuncInstance(runc: Runc, req: InstanceRequest, bundle: RuncBundle, parts: RuncParts): Promise<Instance> {
  // From here runc may hold state for the id: its delete comes first on the way out.
  req.undo.push({ what: "runtime delete", run: () => runc.delete(req.id, true), runtime: true });
  const pid = await traced(
    "runtime create",
    () => {
      const created = runc.create(
        req.id,
        bundle.runtimeBundle,
        join(req.workDir, "init.pid"),
        req.io.stdio,
        join(req.workDir, "runtime.log"),
        req.io.console?.socketPath(),
      );
      // Both run at once: runc in its process, compiling on a thread of ours. A failed create
      // still waits for the compile and its cache write (warm never fails): answered at once,
      // containerd's Shutdown could end the server in the middle of that write and leave its
      // tmp file in the cache.
      const warming = bundle.warm?.();
      return created.finally(() => warming);
    },
    { attributes: { "bunwasi.runtime": "runc", "bunwasi.kind": bundle.kind } },
  );
  const initExe = exeOf(pid);
  // The init is in the container's cgroup from create on: its baseline count now.
  const oom = await watchOom(pid, { live: { watchReadable: (fd, cb) => parts.watcher.watchReadable(fd, cb), onKill: req.onOom } });
  req.undo.push({ what: "stop watching for OOM kills", run: async () => oom?.close() });
  return new RuncInstance(runc, req, bundle, pid, initExe, oom, parts);
}

class RuncInstance implements Instance {
  readonly exited: Promise<Exit>;
  readonly kind: "wasm" | "native";
  private started = false;
  private paused = false;
  private gone = false;

  constructor(
    private readonly runc: Runc,
    private readonly req: InstanceRequest,
    private readonly bundle: RuncBundle,
    readonly pid: number,
    /** /proc/<pid>/exe of runc's init, before `start` execs the container's process. */
    private readonly initExe: string,
    /** The memory cgroup's OOM kills (null: they could not be watched). */
    private readonly oom: OomWatch | null,
    private readonly parts: RuncParts,
  ) {
    this.kind = bundle.kind;
    this.exited = watchProcess(parts, pid, `${req.namespace}/${req.id}`);
    void this.exited.then(() => {
      this.gone = true;
    });
  }

  private get id(): string {
    return this.req.id;
  }

  async start(): Promise<void> {
    await this.runc.start(this.id);
    this.started = true;
  }

  async kill(signal: number, all: boolean): Promise<void> {
    // A wasm container's init is our executor, PID 1 of its pid namespace: until it has
    // installed its handlers (tens of ms after `runc start`; before its exec the pid is still
    // runc's init, which catches everything), the kernel silently drops a
    // SIGTERM/SIGINT/SIGHUP/SIGQUIT sent to it, and the task would run on although Kill
    // succeeded (seen: 3 of 8 `ctr run -d` + immediate `ctr task kill`). Wait for the handler.
    if (this.kind === "wasm" && this.started && !this.paused && WASM_HANDLED_SIGNALS.has(signal)) {
      await untilSignalHandled(this.pid, this.initExe, signal, () => this.gone);
    }
    await this.runc.kill(this.id, signal, all);
  }

  async pause(): Promise<void> {
    await this.runc.pause(this.id);
    this.paused = true;
  }

  async resume(): Promise<void> {
    await this.runc.resume(this.id);
    this.paused = false;
  }

  delete(force: boolean): Promise<void> {
    return this.runc.delete(this.id, force);
  }

  pids(): Promise<number[]> {
    return this.runc.ps(this.id);
  }

  async stats(): Promise<RuncStats> {
    const [stats, oomKills] = await Promise.all([this.runc.stats(this.id), this.oom?.count() ?? null]);
    return oomKills === null ? stats : { ...stats, oomKills };
  }

  update(resources: string): Promise<void> {
    return this.runc.update(this.id, resources);
  }

  oomKilled(): Promise<boolean> | null {
    const oom = this.oom;
    if (oom === null) return null;
    // The last question: the live notification ends with it.
    return oom
      .killed()
      .catch(() => false)
      .finally(() => oom.close());
  }

  async exec(execId: string, process: OciProcess): Promise<InstanceExec> {
    const { parts, req } = this;
    const step = parts.step ?? (<T>(fn: () => T) => fn());
    const prepared = await step(
      () => prepareExecProcess({ bundle: req.bundle, runtimeBundle: this.bundle.runtimeBundle, engine: parts.engine, process }),
      "prepare exec",
    );
    const file = (ext: string) => join(req.workDir, `exec-${execId}.${ext}`);
    const files = { process: file("json"), pid: file("pid"), log: file("log") };
    writeFileSync(files.process, JSON.stringify(prepared.process), { mode: 0o600 });
    return new RuncExec(this.runc, req, execId, files, parts);
  }
}

/** An exec process: `runc exec --detach`, then a process of ours like the init. */
class RuncExec implements InstanceExec {
  private pid = 0;
  private readonly exit = Promise.withResolvers<Exit>();
  readonly exited = this.exit.promise;

  constructor(
    private readonly runc: Runc,
    private readonly req: InstanceRequest,
    private readonly execId: string,
    private readonly files: { process: string; pid: string; log: string },
    private readonly parts: RuncParts,
  ) {}

  async start(io: ProcessIo): Promise<number> {
    const { req, files } = this;
    this.pid = await this.runc.exec(req.id, files.process, files.pid, io.stdio, files.log, io.console?.socketPath());
    this.exit.resolve(watchProcess(this.parts, this.pid, `exec ${req.namespace}/${req.id}/${this.execId}`));
    return this.pid;
  }

  kill(signal: number): void {
    // Never a pid of 0: kill(2) would signal our own process group.
    if (this.pid <= 0) throw new Error(`exec ${this.execId} has not started`);
    // It is our child (the subreaper's) until its exit is collected, so its pid cannot name
    // another process while its container can still be told to signal it.
    process.kill(this.pid, signal);
  }

  delete(): void {
    for (const f of Object.values(this.files)) rmSync(f, { force: true });
  }
}

/**
 * The exit of `pid`, a process of ours; never rejects: losing sight of it must not lose the
 * container (or the server, through an unhandled rejection), so it is reported gone, with
 * the status a shell gives "unknown".
 */
function watchProcess(parts: RuncParts, pid: number, what: string): Promise<Exit> {
  return parts.watcher.watch(pid).then(
    (r) => ({ status: r.status, at: r.exitedAt }),
    (e) => {
      parts.log(`watching ${what} (pid ${pid}): ${String(e)}`, "error");
      return { status: STATUS_UNKNOWN, at: new Date() };
    },
  );
}

function exeOf(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return ""; // gone already, or not ours to read: untilSignalHandled then waits on SigCgt only
  }
}
