// A TaskHost with no root, no runc and no containerd: its instances are in-memory containers
// whose processes exit when told (or when killed), and event sinks record what was published.
// Each namespace's instances (and those of a Create with runtime options) log their calls on a
// FakeRuntime, where any call can be held at a gate, to put calls side by side.

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RuncError, type RuncStats } from "../../../src/linux/runc.ts";
import type { EncodedEvent, EventSink } from "../../../src/task/events.ts";
import type { Exit, Instance, InstanceExec, InstanceRequest, OciProcess, ProcessIo } from "../../../src/task/instance.ts";
import type { RuntimeOptions } from "../../../src/task/runtime-options.ts";
import type { LogLevel, NamespaceHost, RootfsMount, TaskHost } from "../../../src/task/task-host.ts";
import type { CallContext } from "../../../src/ttrpc/index.ts";

export interface Published {
  ns: string;
  topic: string;
  event: EncodedEvent;
}

type RuntimeMethod = "create" | "start" | "exec" | "kill" | "delete" | "pause" | "resume" | "ps" | "stats" | "update";

/** A held runtime call: `release()` lets it go on, `fail(e)` makes it fail. */
export interface Gate {
  /** Resolves once a call has reached the gate. */
  reached: Promise<void>;
  release(): void;
  fail(e: Error): void;
}

interface FakeProcess {
  ns: string;
  id: string;
  started: boolean;
  exited: boolean;
  resolve(e: Exit): void;
  promise: Promise<Exit>;
}

/** The processes of every fake runtime: one pid space, as on a real host. */
class Processes {
  private nextPid = 1000;
  readonly byPid = new Map<number, FakeProcess>();

  spawn(ns: string, id: string): number {
    const pid = this.nextPid++;
    let resolve!: (e: Exit) => void;
    const promise = new Promise<Exit>((r) => (resolve = r));
    this.byPid.set(pid, { ns, id, started: false, exited: false, resolve, promise });
    return pid;
  }

  find(ns: string, id: string): [number, FakeProcess] | undefined {
    for (const entry of this.byPid) if (entry[1].ns === ns && entry[1].id === id) return entry;
    return undefined;
  }

  exit(pid: number, status: number): void {
    const p = this.byPid.get(pid);
    if (p === undefined || p.exited) return;
    p.exited = true;
    p.resolve({ status, at: new Date() });
  }
}

/** An in-memory OCI runtime: the calls it got, in order, and the containers it holds. */
export class FakeRuntime {
  readonly calls: string[] = [];
  readonly containers = new Map<string, { pid: number; paused: boolean }>();
  private readonly gates = new Map<RuntimeMethod, Gate & { wait: Promise<void>; arrived(): void }>();
  /** Makes the next calls of a method fail with this error. */
  readonly failing = new Map<RuntimeMethod, Error>();
  /** When set, the next container's init has exited with this status before create returns. */
  diesOnCreate: number | null = null;
  /** When set, the next exec process has exited with this status before exec returns. */
  diesOnExec: number | null = null;
  /** The resources of each update, in order, as the runtime got them. */
  readonly updates: { id: string; resources: unknown }[] = [];

  constructor(
    readonly ns: string,
    private readonly procs: Processes,
  ) {}

  /** Holds the next call of `method` until released. */
  gate(method: RuntimeMethod): Gate {
    let release!: () => void;
    let fail!: (e: Error) => void;
    let arrived!: () => void;
    const wait = new Promise<void>((res, rej) => {
      release = res;
      fail = rej;
    });
    const reached = new Promise<void>((r) => (arrived = r));
    const g = { reached, release, fail, wait, arrived };
    this.gates.set(method, g);
    return g;
  }

  private async enter(method: RuntimeMethod, detail: string): Promise<void> {
    this.calls.push(`${method} ${detail}`.trim());
    const g = this.gates.get(method);
    if (g) {
      this.gates.delete(method);
      g.arrived();
      await g.wait;
    }
    const err = this.failing.get(method);
    if (err) throw err;
  }

  async create(id: string): Promise<number> {
    await this.enter("create", id);
    const pid = this.procs.spawn(this.ns, id);
    this.containers.set(id, { pid, paused: false });
    if (this.diesOnCreate !== null) this.procs.exit(pid, this.diesOnCreate);
    this.diesOnCreate = null;
    return pid;
  }

  /** An exec process: "<id>/<exec id>" in the pid space. */
  async exec(id: string, execId: string): Promise<number> {
    await this.enter("exec", `${id} ${execId}`);
    const c = this.mustExist(id, "exec");
    const init = this.procs.byPid.get(c.pid)!;
    if (init.exited) throw new RuncError("runc exec", 1, "cannot exec in a stopped container");
    const pid = this.procs.spawn(this.ns, `${id}/${execId}`);
    this.procs.byPid.get(pid)!.started = true;
    if (this.diesOnExec !== null) this.procs.exit(pid, this.diesOnExec);
    this.diesOnExec = null;
    return pid;
  }

  async start(id: string): Promise<void> {
    await this.enter("start", id);
    const c = this.mustExist(id, "start");
    this.procs.byPid.get(c.pid)!.started = true;
  }

  async kill(id: string, signal: number, all: boolean): Promise<void> {
    await this.enter("kill", `${id} ${signal}${all ? " all" : ""}`);
    const c = this.mustExist(id, "kill");
    const p = this.procs.byPid.get(c.pid)!;
    if (p.exited && !all) throw new RuncError("runc kill", 1, "container not running");
    // As the kernel would: the exit is seen a little later, not within the call.
    queueMicrotask(() => this.procs.exit(c.pid, 128 + signal));
  }

  async delete(id: string, force: boolean): Promise<void> {
    await this.enter("delete", `${id}${force ? " force" : ""}`);
    const c = this.containers.get(id);
    if (c === undefined) {
      if (force) return; // runc delete --force of a container that is not there is fine
      throw new RuncError("runc delete", 1, `container ${id} does not exist`);
    }
    const p = this.procs.byPid.get(c.pid)!;
    if (!p.exited && !force) throw new RuncError("runc delete", 1, "cannot delete container that is not stopped");
    this.containers.delete(id);
    // --force kills a waiting (or running) init.
    if (!p.exited) queueMicrotask(() => this.procs.exit(c.pid, 137));
  }

  async pause(id: string): Promise<void> {
    await this.enter("pause", id);
    this.mustExist(id, "pause").paused = true;
  }

  async resume(id: string): Promise<void> {
    await this.enter("resume", id);
    this.mustExist(id, "resume").paused = false;
  }

  async ps(id: string): Promise<number[]> {
    await this.enter("ps", id);
    const init = this.mustExist(id, "ps").pid;
    // The init and the exec processes of the container still running, as runc ps lists them.
    const execs = [...this.procs.byPid].filter(([, p]) => p.ns === this.ns && p.id.startsWith(`${id}/`) && !p.exited);
    return [init, ...execs.map(([pid]) => pid)];
  }

  async stats(id: string): Promise<RuncStats> {
    await this.enter("stats", id);
    this.mustExist(id, "stats");
    return { pids: { current: 1, limit: 10 } };
  }

  async update(id: string, resources: string): Promise<void> {
    await this.enter("update", id);
    this.mustExist(id, "update");
    this.updates.push({ id, resources: JSON.parse(resources) });
  }

  private mustExist(id: string, what: string) {
    const c = this.containers.get(id);
    if (c === undefined) throw new RuncError(`runc ${what}`, 1, `container ${id} does not exist`);
    return c;
  }
}

/** A container of a FakeRuntime, as the task's Instance. */
class FakeInstance implements Instance {
  readonly kind = "native";
  readonly exited: Promise<Exit>;

  constructor(
    private readonly host: FakeHost,
    private readonly runtime: FakeRuntime,
    private readonly req: InstanceRequest,
    readonly pid: number,
  ) {
    this.exited = host.procs.byPid.get(pid)!.promise;
  }

  start = () => this.runtime.start(this.req.id);
  kill = (signal: number, all: boolean) => this.runtime.kill(this.req.id, signal, all);
  pause = () => this.runtime.pause(this.req.id);
  resume = () => this.runtime.resume(this.req.id);
  delete = (force: boolean) => this.runtime.delete(this.req.id, force);
  pids = () => this.runtime.ps(this.req.id);
  stats = () => this.runtime.stats(this.req.id);
  update = (resources: string) => this.runtime.update(this.req.id, resources);
  oomKilled = () => this.host.oomKilled(this.pid);

  async exec(execId: string, process: OciProcess): Promise<InstanceExec> {
    if (this.host.prepareExecError) throw this.host.prepareExecError;
    this.host.execsPrepared.push({ id: this.req.id, execId, process });
    const { host, runtime, req } = this;
    const exit = Promise.withResolvers<Exit>();
    let pid = 0;
    return {
      start: async (_io: ProcessIo) => {
        pid = await runtime.exec(req.id, execId);
        exit.resolve(host.procs.byPid.get(pid)!.promise);
        return pid;
      },
      exited: exit.promise,
      kill: (signal) => host.signal(pid, signal),
      delete: () => {},
    };
  }
}

export class RecordingSink implements EventSink {
  constructor(
    private readonly ns: string,
    private readonly all: Published[],
  ) {}

  publish(topic: string, event: EncodedEvent): void {
    this.all.push({ ns: this.ns, topic, event });
  }
}

export class FakeHost implements TaskHost {
  readonly procs = new Processes();
  readonly runtimes = new Map<string, FakeRuntime>();
  readonly events: Published[] = [];
  readonly logs: { msg: string; level: LogLevel }[] = [];
  readonly mounted = new Set<string>();
  /** Namespaces asked for, in order (each once per service). */
  readonly namespacesAsked: string[] = [];
  readonly root = mkdtempSync(join(tmpdir(), "bunwasi-task-"));
  /** When set, unmounting fails with this error. */
  unmountError: Error | null = null;
  /** When set, creating an instance fails with this error before anything else (as preparing its bundle would). */
  prepareError: Error | null = null;
  /** When set, preparing an exec's process fails with this error. */
  prepareExecError: Error | null = null;
  /** When set, a created instance's work that overlaps its runtime's create (the compile cache's). */
  warm: (() => Promise<void>) | null = null;
  /** Exec processes as their instances got them, in order. */
  readonly execsPrepared: { id: string; execId: string; process: OciProcess }[] = [];
  /** Signals sent to exec processes: "pid signal". */
  readonly signals: string[] = [];
  /** The runtimes made for containers with runtime options, in order. */
  readonly optionRuntimes: { ns: string; options: RuntimeOptions; runtime: FakeRuntime }[] = [];

  namespace(ns: string): NamespaceHost {
    this.namespacesAsked.push(ns);
    this.runtimes.set(ns, new FakeRuntime(ns, this.procs));
    return { stateDir: join(this.root, ns), events: new RecordingSink(ns, this.events) };
  }

  /** As the runc instance does it: the runtime's delete is undone first, the compile cache's work overlaps create. */
  async createInstance(req: InstanceRequest): Promise<Instance> {
    if (this.prepareError) throw this.prepareError;
    let runtime = this.runtime(req.namespace);
    if (req.runtimeOptions) {
      runtime = new FakeRuntime(req.namespace, this.procs);
      this.optionRuntimes.push({ ns: req.namespace, options: req.runtimeOptions, runtime });
    }
    req.undo.push({ what: "runtime delete", run: () => runtime.delete(req.id, true), runtime: true });
    const created = runtime.create(req.id);
    const warming = this.warm?.();
    const pid = await created.finally(() => warming);
    const cg = { count: 0, answered: 0, onKill: req.onOom, closed: false };
    this.oomWatched.push(pid);
    this.oomCgroups.set(pid, cg);
    req.undo.push({
      what: "stop watching for OOM kills",
      run: async () => {
        cg.closed = true;
      },
    });
    return new FakeInstance(this, runtime, req, pid);
  }

  runtime(ns: string): FakeRuntime {
    const r = this.runtimes.get(ns);
    if (!r) throw new Error(`no runtime for namespace ${ns}`);
    return r;
  }

  /** As kill(2) on a process of ours: the process exits by the signal a little later. */
  signal(pid: number, signal: number): void {
    const p = this.procs.byPid.get(pid);
    if (p === undefined || p.exited) throw Object.assign(new Error("kill ESRCH"), { code: "ESRCH" });
    this.signals.push(`${pid} ${signal}`);
    queueMicrotask(() => this.procs.exit(pid, 128 + signal));
  }

  /** An exec process exits on its own with `status`. */
  exitExec(ns: string, id: string, execId: string, status: number): void {
    const found = this.procs.find(ns, `${id}/${execId}`);
    if (!found) throw new Error(`no process for ${ns}/${id}/${execId}`);
    this.procs.exit(found[0], status);
  }

  /** Each init's cgroup: its OOM kill count, what was answered, whom to tell live. */
  private readonly oomCgroups = new Map<number, { count: number; answered: number; onKill: () => void; closed: boolean }>();
  /** Inits whose cgroup is watched for OOM kills, in order. */
  readonly oomWatched: number[] = [];

  /** As src/linux/oom.ts: a kill is answered once; the last question ends the watch. */
  oomKilled(pid: number): Promise<boolean> | null {
    const cg = this.oomCgroups.get(pid);
    if (cg === undefined) return null;
    const killed = cg.count > cg.answered;
    cg.answered = cg.count;
    cg.closed = true;
    return Promise.resolve(killed);
  }

  /** Whether the container's cgroup is no longer watched. */
  oomWatchClosed(ns: string, id: string): boolean {
    return this.oomCgroups.get(this.pidOf(ns, id))?.closed ?? false;
  }

  /** The kernel OOM-kills the container's init: its cgroup counts the kill, the init exits on SIGKILL. */
  oomKill(ns: string, id: string): void {
    const pid = this.pidOf(ns, id);
    this.oomCgroups.get(pid)!.count++;
    this.procs.exit(pid, 137);
  }

  /** The kernel OOM-kills another process of the container: counted and told live, the init runs on. */
  oomKillChild(ns: string, id: string): void {
    const cg = this.oomCgroups.get(this.pidOf(ns, id))!;
    cg.count++;
    // As src/linux/oom.ts does on a notification: the kill is answered once, then told.
    cg.answered = cg.count;
    cg.onKill();
  }

  private pidOf(ns: string, id: string): number {
    const found = this.procs.find(ns, id);
    if (!found) throw new Error(`no process for ${ns}/${id}`);
    return found[0];
  }

  /** The container's init exits on its own with `status`. */
  exit(ns: string, id: string, status: number): void {
    const found = this.procs.find(ns, id);
    if (!found) throw new Error(`no process for ${ns}/${id}`);
    this.procs.exit(found[0], status);
  }

  async mountRootfs(bundle: string, _mounts: RootfsMount[]): Promise<() => Promise<void>> {
    this.mounted.add(bundle);
    return async () => {
      if (this.unmountError) throw this.unmountError;
      this.mounted.delete(bundle);
    };
  }

  metrics(stats: RuncStats) {
    return { typeUrl: "fake.Metrics", value: new TextEncoder().encode(JSON.stringify(stats)) };
  }

  log = (msg: string, level: LogLevel = "info") => {
    this.logs.push({ msg, level });
  };

  /** Topics published for one container of one namespace, in order. */
  topics(ns: string): string[] {
    return this.events.filter((e) => e.ns === ns).map((e) => e.topic);
  }
}

/** A call context as the ttrpc server builds it; `ns` goes in containerd's metadata key. */
export function ctxFor(ns?: string | string[]): CallContext {
  const metadata: Record<string, string[]> = Object.create(null);
  if (ns !== undefined) metadata["containerd-namespace-ttrpc"] = Array.isArray(ns) ? ns : [ns];
  return { service: "containerd.task.v2.Task", method: "Test", metadata, signal: new AbortController().signal, deadline: undefined };
}
