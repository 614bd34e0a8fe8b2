// One container: its task's state (src/task/state.ts decides what may happen to it), its
// init process and exit, its exec processes, and what its Create set up (an undo stack, run
// by a failed Create and by Delete). How it runs is its Instance's (src/task/instance.ts),
// which the host makes. Nothing here blocks the event loop for long, since one process may
// serve the calls of many pods at once. The work dir is made with a synchronous call
// (docs/ARCHITECTURE.md, "Bun's thread pool").

import { rmSync } from "node:fs";
import { join } from "node:path";
import { SIGNALS, signaledStatus } from "../common/signals.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import { ConsoleHandover } from "./console.ts";
import { type ExecOptions, ExecProcess } from "./exec.ts";
import type { Status } from "./gen/containerd/types/task/task.ts";
import type { Exit, Instance, OciProcess } from "./instance.ts";
import { OutputFifos } from "./output-fifos.ts";
import { CONSOLE_TIMEOUT_MS, failure, type Process } from "./process.ts";
import { type RuntimeOptions, saveRuntimeOptions } from "./runtime-options.ts";
import { afterCall, afterExit, begin, check, EXCLUSIVE, statusOf, type TaskCall, type TaskState } from "./state.ts";
import { Stdio, type StdioPaths } from "./stdio.ts";
import type { NamespaceHost, RootfsMount, TaskHost } from "./task-host.ts";
import { Terminal } from "./terminal.ts";
import { UndoStack } from "./undo.ts";
import { makeWorkDir } from "./work-dir.ts";

/** How long Delete of a never-started container waits for its init to go once the runtime removed it. */
const CREATED_EXIT_WAIT_MS = 5000;

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

/** What the service wants to hear of a container's life (it publishes the events). */
export interface ContainerEvents {
  /** The init has exited (after the execs still running then). */
  exited(c: Container): void;
  execExited(c: Container, e: ExecProcess): void;
  /** An OOM kill in its cgroup while it runs (not its init's exit). */
  oom(c: Container): void;
  /** Its Delete has removed it: once this resolves, the Delete answers. */
  removed(c: Container, exit: Exit): Promise<void>;
}

export class Container implements Process {
  state: TaskState = "created";
  /** The exclusive call (start, pause, resume, delete) under way, if any. */
  busy: TaskCall | null = null;
  pid = 0;
  exit: Exit | null = null;
  /** Resolves when the init process has exited. */
  readonly exited: Promise<Exit>;
  /** The exec processes, by exec id (added by Exec, removed by their Delete). */
  readonly execs = new Map<string, ExecProcess>();
  /**
   * Set as soon as the init process has exited, while its exit waits for the execs still
   * running (the init's exit is reported last) and for its output to be read: no exec may
   * start from then on.
   */
  initExited = false;
  /** The pty of a terminal=true task. */
  terminal: Terminal | null = null;
  /** How it runs; set by create. */
  private instance!: Instance;
  /** Our hold on its output fifos until its exit is reported (./output-fifos.ts). */
  private output = OutputFifos.none();
  /** Exec ids whose Exec is being prepared: a second Exec of one is ALREADY_EXISTS. */
  private readonly adding = new Set<string>();
  /** Set while Delete runs: a second Delete joins it. */
  private deleting: Promise<{ exit: Exit; failed: string[] }> | null = null;
  private resolveExit!: (e: Exit) => void;
  /** What Create set up, newest first; what Delete could not undo stays for a retry. */
  private readonly undo = new UndoStack();

  private constructor(
    readonly opts: CreateOptions,
    private readonly host: TaskHost,
    private readonly events: ContainerEvents,
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

  /** Whether a wasm module or a native process runs it (its instance's kind). */
  get kind(): Instance["kind"] {
    return this.instance.kind;
  }

  get execId(): string {
    return "";
  }

  get io(): CreateOptions {
    return this.opts;
  }

  /**
   * Makes its work dir, mounts the rootfs, opens its stdio and has the host create its
   * instance. On failure everything done so far is undone (failures of that logged) and the
   * error thrown.
   */
  static async create(host: TaskHost, ns: NamespaceHost, opts: CreateOptions, events: ContainerEvents): Promise<Container> {
    const c = new Container(opts, host, events);
    const workDir = join(ns.stateDir, opts.id);
    try {
      c.undo.push({
        what: `remove ${workDir}`,
        run: async () => rmSync(workDir, { recursive: true, force: true }),
        needsRuntimeGone: true,
      });
      await host.claimWorkDir?.({ namespace: opts.namespace, id: opts.id, bundle: opts.bundle, workDir });
      makeWorkDir(workDir);
      // Before the runtime holds anything: a `shim delete` after this server dies must find
      // the runtime that created the container (src/task/runtime-options.ts).
      if (opts.runtimeOptions) await saveRuntimeOptions(workDir, opts.runtimeOptions);
      if (opts.rootfs.length > 0) {
        const unmount = await host.mountRootfs(opts.bundle, opts.rootfs);
        c.undo.push({ what: `unmount ${opts.bundle}/rootfs`, run: unmount });
      }
      // A terminal process gets the pty the runtime makes; others get containerd's fifos.
      const console = opts.terminal ? new ConsoleHandover() : null;
      const stdio = console ? null : await Stdio.open(opts, { id: opts.id, namespace: opts.namespace });
      const logger = stdio?.logger;
      // Stopped after the runtime's delete (undos run last-added first): by then its input is over.
      if (logger) c.undo.push({ what: "stop the logging program", run: () => logger.stop() });
      try {
        if (stdio) {
          const output = OutputFifos.hold(stdio.fds.slice(1));
          c.output = output;
          c.undo.push({ what: "close our copies of the output fifos", run: async () => output.close() });
        }
        c.instance = await host.createInstance({
          namespace: opts.namespace,
          id: opts.id,
          bundle: opts.bundle,
          workDir,
          io: { stdio: stdio?.fds ?? null, console },
          runtimeOptions: opts.runtimeOptions ?? null,
          undo: c.undo,
          onOom: () => events.oom(c),
        });
        c.pid = c.instance.pid;
        if (console) {
          const { master, onHangup } = await console.receive(CONSOLE_TIMEOUT_MS);
          const terminal = await Terminal.attach(master, opts, onHangup);
          c.terminal = terminal;
          c.undo.push({ what: "close the terminal", run: () => terminal.close() });
        }
      } finally {
        await stdio?.close();
        await console?.close();
      }
    } catch (e) {
      const failed = await c.undo.run();
      for (const f of failed) host.log(`create ${opts.namespace}/${opts.id}: undoing after a failed create: ${f}`, "error");
      throw failure("create", e);
    }
    return c;
  }

  /**
   * Takes the init's exit from its instance. The caller does it once it has announced the
   * container (/tasks/create): an init already gone is reported at once, and its
   * /tasks/exit must not come first.
   */
  watchExit(): void {
    void this.instance.exited.then((exit) => this.exitedWith(exit));
  }

  /**
   * Once exited: whether the kernel OOM-killed a process of the container's cgroup; null when
   * nobody watches (answered without waiting). Never rejects.
   */
  oomKilled(): Promise<boolean> | null {
    return this.instance.oomKilled();
  }

  status(): Status {
    return statusOf(this.state, this.busy === "pause");
  }

  check(call: TaskCall): void {
    check(this.id, this.state, call);
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
      await this.instance.start();
    } catch (e) {
      throw failure("start", e);
    }
  }

  async kill(signal: number, all: boolean): Promise<void> {
    try {
      await this.instance.kill(signal, all);
    } catch (e) {
      if (this.initExited) return; // it raced us to the exit (which may not be reported yet)
      throw failure("kill", e);
    }
  }

  async pause(): Promise<void> {
    try {
      await this.instance.pause();
    } catch (e) {
      throw failure("pause", e);
    }
  }

  async resume(): Promise<void> {
    try {
      await this.instance.resume();
    } catch (e) {
      throw failure("resume", e);
    }
  }

  async pids(): Promise<number[]> {
    if (this.exit !== null) return [];
    try {
      return await this.instance.pids();
    } catch (e) {
      throw failure("ps", e);
    }
  }

  async stats() {
    try {
      return await this.instance.stats();
    } catch (e) {
      throw failure("stats", e);
    }
  }

  async update(resources: string): Promise<void> {
    try {
      await this.instance.update(resources);
    } catch (e) {
      throw failure("update", e);
    }
  }

  /** Delete of the task. One per container: a second caller waits for the first and gets its answer. */
  async delete(): Promise<Exit> {
    this.deleting ??= this.remove().finally(() => {
      this.deleting = null;
    });
    return (await this.deleting).exit;
  }

  /**
   * Removes the container: the table allows it once exited or never started (then its
   * instance's waiting init is removed first and its exit awaited). Every undo step is tried;
   * what could not be undone is kept (Delete may be retried), logged, and the Delete's error.
   * `final` (containerd's `shim delete`, the daemon's deleteFinal): nobody would retry, so
   * what failed is returned instead, and the container goes all the same.
   */
  async remove(final = false): Promise<{ exit: Exit; failed: string[] }> {
    const out = await this.transition("delete", async () => {
      const out = await this.undoAll();
      if (out.failed.length > 0) {
        for (const f of out.failed) this.host.log(`delete ${this.namespace}/${this.id}: could not clean up: ${f}`, "error");
        if (!final) throw new TtrpcError(Code.UNKNOWN, `delete ${this.id}: could not clean up: ${out.failed.join("; ")}`);
      }
      return out;
    });
    await this.events.removed(this, out.exit);
    return out;
  }

  private async undoAll(): Promise<{ exit: Exit; failed: string[] }> {
    if (this.exit === null) {
      // Created but never started: the instance's init is still waiting.
      try {
        await this.instance.delete(true);
      } catch (e) {
        this.host.log(`delete ${this.namespace}/${this.id}: runtime delete of the created container: ${String(e)}`, "warning");
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.exited, new Promise((r) => (timer = setTimeout(r, CREATED_EXIT_WAIT_MS)))]);
      clearTimeout(timer);
    }
    for (const e of this.execs.values()) await e.releaseIo();
    const failed = await this.undo.run();
    return { exit: this.exit ?? { status: signaledStatus(SIGNALS.SIGKILL), at: new Date() }, failed };
  }

  private async exitedWith(exit: Exit): Promise<void> {
    this.initExited = true;
    // As runc-v2: the init's exit is the container's last. Execs die with the init in a pid
    // namespace of the container's own; in a shared one they would not: either way they are
    // killed, and the init's exit waits for theirs.
    const live = [...this.execs.values()].filter((e) => e.live);
    for (const e of live) e.killForInitExit();
    if (live.length > 0) await Promise.all(live.map((e) => e.exited));
    await this.output.read({
      onWait: (n) => this.host.log(`${this.namespace}/${this.id}: its exit waits for containerd to read ${n} bytes of its output`, "debug"),
    });
    this.exit = exit;
    this.state = afterExit(this.state);
    this.resolveExit(exit);
    this.events.exited(this);
    this.output.close();
  }

  /**
   * Exec: adds exec `opts.execId` in `created`, made ready to run by the instance. The caller
   * has checked the task table; a second exec of the same id is ALREADY_EXISTS, also while
   * the first is still being prepared.
   */
  async addExec(opts: ExecOptions, process: OciProcess): Promise<ExecProcess> {
    if (this.execs.has(opts.execId) || this.adding.has(opts.execId)) {
      throw new TtrpcError(Code.ALREADY_EXISTS, `exec ${opts.execId} in container ${this.id}: already exists`);
    }
    this.adding.add(opts.execId);
    try {
      const run = await this.instance.exec(opts.execId, { ...process, terminal: opts.terminal });
      const e = new ExecProcess(opts, this, run, {
        exited: (e) => this.events.execExited(this, e),
        deleted: (e) => this.execs.delete(e.id),
      });
      this.execs.set(opts.execId, e);
      return e;
    } catch (err) {
      throw failure("exec", err);
    } finally {
      this.adding.delete(opts.execId);
    }
  }
}
