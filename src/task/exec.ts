// One exec process of a container (`ctr task exec`, `kubectl exec`): its state (the exec table
// of src/task/state.ts decides what may happen to it), pid, exit, stdio or terminal. The
// runtime steps are its container's (src/task/container.ts), which owns the runtime.

import type { Exit, OciProcess } from "./host.ts";
import type { ExecCall, ExecState } from "./state.ts";
import type { StdioPaths } from "./stdio.ts";
import type { Terminal } from "./terminal.ts";

export interface ExecOptions extends StdioPaths {
  execId: string;
  terminal: boolean;
}

export class ExecProcess {
  state: ExecState = "created";
  /** The exclusive call (start, delete) under way, if any. */
  busy: ExecCall | null = null;
  pid = 0;
  exit: Exit | null = null;
  kind: "wasm" | "native" = "native";
  /** The process as the runtime gets it (set once Exec has prepared it). */
  process: OciProcess | null = null;
  terminal: Terminal | null = null;
  /** Resolves when the process has exited (or its start failed). */
  readonly exited: Promise<Exit>;
  private resolveExit!: (e: Exit) => void;

  constructor(readonly opts: ExecOptions) {
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
  }

  get id(): string {
    return this.opts.execId;
  }

  /** Started, or starting: what an init exit must wait for before it is reported. */
  get live(): boolean {
    return this.state === "running" || this.busy === "start";
  }

  /** Records the exit once; the state follows the table (see execAfterExit). */
  exitedWith(exit: Exit, state: ExecState): boolean {
    if (this.exit !== null) return false;
    this.exit = exit;
    this.state = state;
    this.resolveExit(exit);
    return true;
  }
}
