// A process of a task as the Task service's calls name it: the container's init (a Container,
// ./container.ts) or one of its exec processes (an ExecProcess, ./exec.ts), as runc-v2's
// process.Process. The service finds the process a call names once (by its exec id, none for
// the init) and asks it; each answers by its own table of src/task/state.ts.

import { Code, TtrpcError } from "../ttrpc/index.ts";
import type { Status } from "./gen/containerd/types/task/task.ts";
import type { Exit } from "./instance.ts";
import type { ExecCall } from "./state.ts";
import type { StdioPaths } from "./stdio.ts";
import type { Terminal } from "./terminal.ts";

/** The calls that name one process (the exec table's; the task table has these and more). */
export type ProcessCall = ExecCall;

export interface Process {
  /** The container's id for its init, the exec id for an exec process (TaskExit's `id`). */
  readonly id: string;
  /** containerd's exec id: "" for the init. */
  readonly execId: string;
  readonly pid: number;
  readonly exit: Exit | null;
  /** Resolves once it has exited, or can no longer run (an exec deleted or failed before it ran). */
  readonly exited: Promise<Exit>;
  /** Its stdio as containerd named it, and whether it has a terminal. */
  readonly io: StdioPaths & { terminal: boolean };
  /** The pty of a terminal process, once it runs. */
  readonly terminal: Terminal | null;
  /** The status containerd's State shows. */
  status(): Status;
  /** Throws its table's refusal unless `call` may run now. */
  check(call: ProcessCall): void;
  /**
   * Runs `step` as `call` if its table allows it now (one state-changing call at a time), and
   * moves the state to where the table says once it succeeds (an exit meanwhile wins).
   */
  transition<T>(call: ProcessCall, step: () => Promise<T>, opts?: { all?: boolean }): Promise<T>;
  /** Start's step: runs it. */
  start(): Promise<void>;
  /** Kill's step: signals it (`all`: every process of the container, for the init). */
  kill(signal: number, all: boolean): Promise<void>;
  /**
   * The whole of a Delete, its table's check included (a second Delete of a container joins
   * the first): resolves with its exit, null if it never ran.
   */
  delete(): Promise<Exit | null>;
}

/** How long the runtime may take to send a terminal's master once its create or exec returned. */
export const CONSOLE_TIMEOUT_MS = 10_000;

/** A runtime failure as the caller should see it: which step, and the runtime's own words. */
export function failure(step: string, e: unknown): TtrpcError {
  if (e instanceof TtrpcError) return e;
  return new TtrpcError(Code.UNKNOWN, `${step}: ${e instanceof Error ? e.message : String(e)}`);
}
