// The seam between a task and the way its container runs, one small interface per container
// (as runwasi's shimkit Instance): the Task service keeps the state tables, the events and the
// Create's undo stack; an Instance does what only its way of running knows. The host makes one
// per Create (TaskHost.createInstance), from containerd's bundle:
//  - under runc (src/runtime-v2/runc-instance.ts): every container in normal mode, and a
//    shared-mode daemon's native ones (the pod's pause, sidecars);
//  - on a thread of the shared-mode daemon (src/daemon/inproc-runtime.ts): its wasm containers.

import type { RuncStats } from "../linux/runc.ts";
import type { RuntimeOptions } from "./runtime-options.ts";
import type { UndoStack } from "./undo.ts";

export interface Exit {
  status: number;
  at: Date;
}

/** An OCI runtime-spec Process (what containerd's ExecProcessRequest carries as JSON). */
export interface OciProcess {
  args: string[];
  terminal?: boolean;
  env?: string[];
  cwd: string;
  [field: string]: unknown;
}

/**
 * A process's stdio as its runtime takes it: containerd's fifos, opened (the runtime's process
 * holds its own copies once it runs), or for a terminal process the console the runtime hands
 * the master of the pty it makes to (stdio is null then).
 */
export interface ProcessIo {
  stdio: [number, number, number] | null;
  console: ProcessConsole | null;
}

/**
 * Where a terminal process's runtime hands over the master of the pty it made for it; the
 * Task service copies it to containerd's fifos (src/task/terminal.ts). One of the two, by the
 * runtime: an OCI runtime (runc, another process) sends it to a unix socket; a runtime in this
 * process (the shared-mode daemon's) hands the fd over.
 */
export interface ProcessConsole {
  /** The unix socket to give an OCI runtime as --console-socket (made on the first call). */
  socketPath(): string;
  /**
   * The master itself, ours from now on. `onHangup`: called when the terminal hangs up (its
   * master closes: CloseIO then EOF, or Delete), where no kernel signals a session of it.
   */
  handOver(master: number, onHangup?: () => void): void;
}

/** What TaskHost.createInstance is told. */
export interface InstanceRequest {
  namespace: string;
  id: string;
  /** containerd's bundle: its config.json, and its rootfs mounted. */
  bundle: string;
  /** <stateDir>/<id>, made by the task: the instance's own files go here, and go with it. */
  workDir: string;
  io: ProcessIo;
  /** containerd's runtime options of the Create (src/task/runtime-options.ts), if any. */
  runtimeOptions: RuntimeOptions | null;
  /**
   * The Create's undo stack: the instance pushes the undo of each thing it sets up as it sets
   * it up, so a Create that fails on the way (in the instance or after it) undoes it, and so
   * does Delete. Its runtime's delete is pushed as the step with `runtime: true`.
   */
  undo: UndoStack;
  /** An OOM kill in the container's cgroup, seen while it runs. */
  onOom: () => void;
}

export interface Instance {
  /** The task's pid: its init's; a module on a thread of the host's own process reports the host's. */
  readonly pid: number;
  readonly kind: "wasm" | "native";
  /**
   * Resolves once the init has exited, with its status (128+signal when killed). Never
   * rejects: an init the host loses sight of has exited with STATUS_UNKNOWN (said in the log).
   */
  readonly exited: Promise<Exit>;
  start(): Promise<void>;
  kill(signal: number, all: boolean): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Removes it from its runtime. `force`: an init still there is killed, and one already gone is fine. */
  delete(force: boolean): Promise<void>;
  pids(): Promise<number[]>;
  stats(): Promise<RuncStats>;
  /** New limits: `resources` is an OCI LinuxResources as JSON. */
  update(resources: string): Promise<void>;
  /**
   * Once exited: whether the kernel OOM-killed a process of its cgroup; null when nobody
   * watches (answered without waiting). Never rejects.
   */
  oomKilled(): Promise<boolean> | null;
  /**
   * Exec: process `execId`, made ready to run in it (a wasm module's args rewritten to our
   * executor). Refused where the instance has no process to enter.
   */
  exec(execId: string, process: OciProcess): Promise<InstanceExec>;
}

/** One exec'd process of an Instance. */
export interface InstanceExec {
  /** Runs it; resolves with its pid once it runs. */
  start(io: ProcessIo): Promise<number>;
  /** Once started, resolves when it exits. Never rejects (as Instance.exited). */
  readonly exited: Promise<Exit>;
  /** Sends `signal` to it once started; throws if it cannot. */
  kill(signal: number): void;
  /**
   * Its files go; a returned promise resolves once they have gone (the Task service answers
   * Delete after it, so an Exec right after that Delete finds the room it freed).
   */
  delete(): void | Promise<void>;
}
