// What the Task service needs from the world around it, as values passed in: the service
// itself reads no environment, probes nothing and keeps no process-wide state, so one
// process can hold one service per sandbox, or one for every pod of a node.
//
//   TaskHost (one per service)          NamespaceHost (one per containerd namespace)
//   ├─ namespace(ns) ─────────────────▶ ├─ runtime   the OCI runtime, its --root for ns
//   ├─ watchExit(pid), watchOom(pid)    ├─ stateDir  per-container working files
//   ├─ kill(pid, sig)                   │
//   ├─ mountRootfs(bundle, mounts)      └─ events    the publisher for ns's events
//   ├─ prepareBundle(id, bundle, dir)
//   ├─ prepareExec(container, process)
//   ├─ metrics(stats)
//   └─ log(msg, level)
//
// The shim's `serve` builds the real ones (src/shim/serve.ts); tests build fakes.

import type { OomWatch } from "../linux/oom.ts";
import type { RuncStats } from "../linux/runc.ts";
import type { EventSink } from "./events.ts";
import type { Any } from "./gen/google/protobuf/any.ts";
import type { RuntimeOptions } from "./runtime-options.ts";

export type LogLevel = "debug" | "info" | "warning" | "error";
export type Logger = (msg: string, level?: LogLevel) => void;

export interface Exit {
  status: number;
  at: Date;
}

/** The OCI runtime (runc or crun) as the task drives it; every call is asynchronous. */
export interface OciRuntime {
  /**
   * Creates the container; its init waits for `start`. Resolves with the init's pid. With a
   * console socket (a terminal process) the runtime sends the pty master there, and `stdio`
   * is null: the process's stdio is the pty.
   */
  create(
    id: string,
    bundle: string,
    pidFile: string,
    stdio: [number, number, number] | null,
    logFile: string,
    consoleSocket?: string,
  ): Promise<number>;
  /**
   * Runs another process in the container (`runc exec --detach`): `processFile` is its OCI
   * process JSON. Resolves with its pid once it runs; stdio and console socket as for create.
   */
  exec(
    id: string,
    processFile: string,
    pidFile: string,
    stdio: [number, number, number] | null,
    logFile: string,
    consoleSocket?: string,
  ): Promise<number>;
  start(id: string): Promise<void>;
  kill(id: string, signal: number, all: boolean): Promise<void>;
  /** With `force`, a container that does not exist is not an error. */
  delete(id: string, force: boolean): Promise<void>;
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  ps(id: string): Promise<number[]>;
  stats(id: string): Promise<RuncStats>;
  /** Sets the container's cgroup limits to `resources`, an OCI LinuxResources as JSON. */
  update(id: string, resources: string): Promise<void>;
  /**
   * A runtime whose containers are not processes of their own (the shared-mode daemon runs
   * wasm in-process, src/daemon/): the exit of `id`, instead of the host watching its pid.
   * Undefined for a container this runtime does not run itself.
   */
  exitOf?(id: string): Promise<Exit> | undefined;
}

/** What a namespace has of its own: runtime root, state directory, event stream. */
export interface NamespaceHost {
  readonly runtime: OciRuntime;
  /** Where per-container files go: <stateDir>/<id> (derived bundle, pid file, runtime log). */
  readonly stateDir: string;
  readonly events: EventSink;
  /**
   * The runtime for a container whose Create carries runtime options (another binary, root
   * or cgroup driver); absent: such options are not honoured and `runtime` is used.
   */
  runtimeWith?(options: RuntimeOptions): OciRuntime;
}

export interface PreparedBundle {
  runtimeBundle: string;
  kind: "wasm" | "native";
  /**
   * Run by the host's own process, not by an executor in a container (shared mode): Kill
   * then has no executor to wait for before sending a catchable signal.
   */
  inProcess?: boolean;
  /** Work that may overlap the runtime's create (filling the compile cache); never fails. */
  warm?: () => Promise<void>;
  /**
   * Forgets what preparing left for the runtime's create (shared mode: the in-process plan),
   * when the Create fails before the runtime took it over. Idempotent; a no-op after create.
   */
  discard?: () => void;
}

/** An OCI runtime-spec Process (what containerd's ExecProcessRequest carries as JSON). */
export interface OciProcess {
  args: string[];
  terminal?: boolean;
  env?: string[];
  cwd: string;
  [field: string]: unknown;
}

/** The container an exec process is for, as prepareExec needs to know it. */
export interface ExecTarget {
  id: string;
  /** containerd's bundle (its config.json and rootfs). */
  bundle: string;
  /** The bundle the runtime runs (for a wasm container: the derived one, with our executor). */
  runtimeBundle: string;
  kind: "wasm" | "native";
}

export interface PreparedExec {
  /** The process to give the runtime: a wasm module's args rewritten to our executor. */
  process: OciProcess;
  kind: "wasm" | "native";
}

export interface RootfsMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export interface TaskHost {
  /**
   * The namespace's runtime, state directory and publisher. Called once per namespace by a
   * service (it keeps the answer); a shared host may hand several services the same value.
   */
  namespace(ns: string): NamespaceHost;
  /** Resolves when `pid` exits, with its status (128+signal when killed). */
  watchExit(pid: number): Promise<Exit>;
  /** Sends `signal` to process `pid` (an exec process: runc-v2 signals those itself); throws if it cannot. */
  kill(pid: number, signal: number): void;
  /**
   * Starts watching the memory cgroup of `pid` (a container's init, just created) for kernel
   * OOM kills, calling `onKill` for each one counted while it runs; null when it cannot.
   * Absent: no /tasks/oom is ever published.
   */
  watchOom?(pid: number, onKill: () => void): Promise<OomWatch | null>;
  /** Mounts containerd's rootfs mounts on `<bundle>/rootfs`; resolves with the undo. */
  mountRootfs(bundle: string, mounts: RootfsMount[]): Promise<() => Promise<void>>;
  /** Turns containerd's bundle into the one the runtime runs (wasm: our executor). */
  prepareBundle(id: string, bundle: string, workDir: string): Promise<PreparedBundle>;
  /**
   * Turns an exec's process into the one the runtime runs in `target`: a wasm module (or WAT)
   * gets our executor (reached at the container's executor mount), a native binary stays.
   */
  prepareExec(target: ExecTarget, process: OciProcess): Promise<PreparedExec>;
  /** The runtime's cgroup statistics as containerd decodes them (v1 or v2 Metrics). */
  metrics(stats: RuncStats): Any;
  log: Logger;
}
