// One exec process of a container (`ctr task exec`, `kubectl exec`): its state (the exec table
// of src/task/state.ts decides what may happen to it), pid, exit, stdio or terminal. How it
// runs is its container's instance's (InstanceExec, src/task/instance.ts).

import { STATUS_UNKNOWN } from "../common/constants.ts";
import { SIGNALS } from "../common/signals.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import { ConsoleHandover } from "./console.ts";
import type { Status } from "./gen/containerd/types/task/task.ts";
import type { Exit, InstanceExec } from "./instance.ts";
import { OutputFifos } from "./output-fifos.ts";
import { CONSOLE_TIMEOUT_MS, failure, type Process, type ProcessCall } from "./process.ts";
import {
  checkExec,
  EXEC_EXCLUSIVE,
  type ExecCall,
  type ExecState,
  execAfterCall,
  execAfterExit,
  execStatusOf,
  type TaskCall,
  type TaskState,
} from "./state.ts";
import { Stdio, type StdioPaths } from "./stdio.ts";
import { Terminal } from "./terminal.ts";

export interface ExecOptions extends StdioPaths {
  execId: string;
  terminal: boolean;
}

/** What an exec's table asks of its container (whose own state decides some calls). */
export interface ExecContainer {
  readonly id: string;
  readonly state: TaskState;
  readonly busy: TaskCall | null;
  /** The init has exited: no exec may start from then on. */
  readonly initExited: boolean;
}

/** What the container wants to hear of its exec. */
export interface ExecEvents {
  exited(e: ExecProcess): void;
  /** Deleted: the container forgets it. */
  deleted(e: ExecProcess): void;
}

export class ExecProcess implements Process {
  state: ExecState = "created";
  /** The exclusive call (start, delete) under way, if any. */
  busy: ExecCall | null = null;
  pid = 0;
  exit: Exit | null = null;
  terminal: Terminal | null = null;
  /** Resolves when the process has exited (or its start failed, or it was deleted unstarted). */
  readonly exited: Promise<Exit>;
  private resolveExit!: (e: Exit) => void;
  /** Its process has exited; the exit may still wait for its output to be read. */
  private ended = false;
  /** Our hold on its output fifos until its exit is reported (./output-fifos.ts). */
  private output = OutputFifos.none();

  constructor(
    readonly opts: ExecOptions,
    private readonly container: ExecContainer,
    private readonly run: InstanceExec,
    private readonly events: ExecEvents,
  ) {
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
  }

  get id(): string {
    return this.opts.execId;
  }

  get execId(): string {
    return this.opts.execId;
  }

  get io(): ExecOptions {
    return this.opts;
  }

  /** Started, or starting: what an init exit must wait for before it is reported. */
  get live(): boolean {
    return this.state === "running" || this.busy === "start";
  }

  status(): Status {
    return execStatusOf(this.state, this.container.state, this.container.busy === "pause");
  }

  check(call: ProcessCall): void {
    const c = this.container;
    checkExec(c.id, this.id, c.state, c.initExited, this.state, call, this.busy);
  }

  async transition<T>(call: ProcessCall, step: () => Promise<T>): Promise<T> {
    const c = this.container;
    const target = checkExec(c.id, this.id, c.state, c.initExited, this.state, call, this.busy);
    const exclusive = EXEC_EXCLUSIVE.has(call);
    if (exclusive) this.busy = call;
    try {
      const out = await step();
      this.state = execAfterCall(this.state, target);
      return out;
    } finally {
      if (exclusive) this.busy = null;
    }
  }

  /** Runs it through its instance, with its terminal if it has one, and watches its exit. */
  async start(): Promise<void> {
    const console = this.opts.terminal ? new ConsoleHandover() : null;
    let stdio: Stdio | null = null;
    try {
      stdio = console ? null : await Stdio.open(this.opts);
      if (stdio) this.output = OutputFifos.hold(stdio.fds.slice(1));
      this.pid = await this.run.start({ stdio: stdio?.fds ?? null, console });
      void this.run.exited.then((exit) => this.exitedOnce(exit));
      if (console) {
        const { master, onHangup } = await console.receive(CONSOLE_TIMEOUT_MS);
        this.terminal = await Terminal.attach(master, this.opts, onHangup);
      }
    } catch (err) {
      // Running without its terminal it would be unreachable: it goes (its exit is watched).
      if (this.pid > 0) this.signalQuietly(SIGNALS.SIGKILL);
      // Never started: Wait gets an answer and Delete may remove it (runc-v2 publishes no exit).
      else {
        this.output.close();
        this.exitedWith({ status: STATUS_UNKNOWN, at: new Date() }, "stopped");
      }
      throw failure("exec", err);
    } finally {
      await stdio?.close();
      await console?.close();
    }
  }

  /** The signal goes to its process (as runc-v2: not through the runtime). */
  async kill(signal: number): Promise<void> {
    try {
      this.run.kill(signal);
    } catch (err) {
      if (this.ended || this.exit !== null) throw new TtrpcError(Code.NOT_FOUND, `kill exec ${this.id}: process already finished`);
      throw failure("kill", err);
    }
  }

  /** Its init has exited: a process still running is killed (its exit is on its way either way). */
  killForInitExit(): void {
    if (this.pid > 0 && this.exit === null) this.signalQuietly(SIGNALS.SIGKILL);
  }

  /** Its terminal and files go, and its container forgets it. */
  delete(): Promise<Exit | null> {
    return this.transition("delete", async () => {
      await this.releaseIo();
      await this.run.delete();
      this.events.deleted(this);
      const exit = this.exit;
      // A Wait on an exec that never ran gets an answer too: it never will run now.
      if (exit === null) this.exitedWith({ status: STATUS_UNKNOWN, at: new Date() }, "deleted");
      return exit;
    });
  }

  /** Its pty and our hold on its output go (its Delete, its container's). */
  async releaseIo(): Promise<void> {
    this.output.close();
    await this.terminal?.close();
    this.terminal = null;
  }

  private async exitedOnce(exit: Exit): Promise<void> {
    if (this.exit !== null || this.ended) return;
    this.ended = true;
    await this.output.read();
    if (!this.exitedWith(exit, execAfterExit(this.state))) return;
    // The master reads EIO once the process side is gone: then its fds can go.
    const t = this.terminal;
    if (t) void t.drained.then(() => t.close());
    this.events.exited(this);
    this.output.close();
  }

  /** Records the exit once; the state follows the table (see execAfterExit). */
  private exitedWith(exit: Exit, state: ExecState): boolean {
    if (this.exit !== null) return false;
    this.exit = exit;
    this.state = state;
    this.resolveExit(exit);
    return true;
  }

  private signalQuietly(signal: number): void {
    try {
      this.run.kill(signal);
    } catch {} // gone already: its exit is on its way
  }
}
