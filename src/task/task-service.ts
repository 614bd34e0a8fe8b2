// containerd's Task service over our containers, as a value: everything it touches comes in
// through its options (src/task/task-host.ts), so a process may hold one per sandbox or one for
// every pod of a node. Served twice, as containerd.task.v2.Task and containerd.task.v3.Task:
// the messages are the same, only the package differs.
//
// Containers are keyed by (namespace, id): the namespace of a call is the one containerd
// puts in its ttrpc metadata, else the shim's -namespace flag. Whether a call may run in a
// task's state, and what it makes of it, is src/task/state.ts's to say.

import { SHIM_VERSION } from "../common/constants.ts";
import { VALID_ID } from "../common/identifiers.ts";
import type { RuncStats } from "../linux/runc.ts";
import { type CallContext, Code, TtrpcError } from "../ttrpc/index.ts";
import { Container, type ContainerEvents } from "./container.ts";
import { type EncodedEvent, encodeEvent, timestamp } from "./events.ts";
import {
  TaskCreate,
  TaskDelete,
  TaskExecAdded,
  TaskExecStarted,
  TaskExit,
  TaskOOM,
  TaskPaused,
  TaskResumed,
  TaskStart,
} from "./gen/containerd/events/task.ts";
import type {
  CheckpointTaskRequest,
  CloseIORequest,
  ConnectRequest,
  ConnectResponse,
  CreateTaskRequest,
  CreateTaskResponse,
  DeleteRequest,
  DeleteResponse,
  ExecProcessRequest,
  KillRequest,
  PauseRequest,
  PidsRequest,
  PidsResponse,
  ResizePtyRequest,
  ResumeRequest,
  ShutdownRequest,
  StartRequest,
  StartResponse,
  StateRequest,
  StateResponse,
  StatsRequest,
  StatsResponse,
  UpdateTaskRequest,
  WaitRequest,
  WaitResponse,
} from "./gen/containerd/runtime/task/v2/shim.ts";
import type { Empty } from "./gen/google/protobuf/empty.ts";
import type { Instance, OciProcess } from "./instance.ts";
import type { Process } from "./process.ts";
import { runtimeOptionsOf } from "./runtime-options.ts";
import { refusal, ruleFor, type TaskCall, type TaskState } from "./state.ts";
import type { NamespaceHost, TaskHost } from "./task-host.ts";

/** The ttrpc metadata key containerd's Go client sets to the call's namespace (pkg/namespaces/ttrpc.go). */
export const NAMESPACE_METADATA_KEY = "containerd-namespace-ttrpc";

export interface TaskServiceOptions {
  host: TaskHost;
  /** The namespace of calls whose metadata names none: the shim's -namespace flag. */
  defaultNamespace: string;
  /** What Connect reports as the shim's pid. */
  shimPid: number;
  /** Called when Shutdown finds nothing left to serve, or is told to stop now. */
  onShutdown(): void;
  /**
   * While this says so, Shutdown leaves the service up even with no container left: a pod
   * created through the Sandbox API lives until its ShutdownSandbox (./sandbox-service.ts).
   */
  holdsOpen?: () => boolean;
}

/** The OCI process of an Exec (JSON in an Any); INVALID_ARGUMENT when it is not one. */
function parseProcess(req: ExecProcessRequest): OciProcess {
  let p: unknown;
  try {
    p = JSON.parse(new TextDecoder().decode(req.spec?.value ?? new Uint8Array()));
  } catch {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `exec ${req.execId}: the process spec is not JSON`);
  }
  const proc = p as Partial<OciProcess> | null;
  if (proc === null || typeof proc !== "object" || !Array.isArray(proc.args) || proc.args.length === 0) {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `exec ${req.execId}: the process spec has no args`);
  }
  if (!proc.args.every((a) => typeof a === "string"))
    throw new TtrpcError(Code.INVALID_ARGUMENT, `exec ${req.execId}: args must be strings`);
  return { ...proc, args: proc.args, cwd: typeof proc.cwd === "string" && proc.cwd ? proc.cwd : "/" } as OciProcess;
}

/**
 * Which exec a pid of Pids is, as runc-v2 says it (`ctr task ps` shows it): its message
 * containerd.runc.v1.ProcessDetails, whose one field is `string exec_id = 1`, encoded by hand
 * (one length-delimited field) rather than through a generated type for one string.
 */
export function processDetails(execId: string): { typeUrl: string; value: Uint8Array } {
  const id = new TextEncoder().encode(execId);
  // Field 1, wire type 2; exec ids are at most 76 bytes, so the length is one varint byte.
  return { typeUrl: "containerd.runc.v1.ProcessDetails", value: Uint8Array.of(0x0a, id.length, ...id) };
}

/** A call's context naming namespace `ns`: how calls made from inside the process (not by containerd) say which. */
export function namespaceContext(ns: string): CallContext {
  // The service reads only the namespace from a call's context.
  return { metadata: { [NAMESPACE_METADATA_KEY]: [ns] } } as unknown as CallContext;
}

/** The namespace a call is for: containerd's metadata, else `fallback`. */
export function namespaceOf(ctx: Pick<CallContext, "metadata"> | undefined, fallback: string): string {
  return ctx?.metadata[NAMESPACE_METADATA_KEY]?.[0] || fallback;
}

/** One namespace's containers, and the host values they run with. */
interface Namespace {
  host: NamespaceHost;
  containers: Map<string, Container>;
  /** Ids whose Create is under way: a second Create of one must not touch the first's files. */
  creating: Set<string>;
}

const EMPTY: Empty = {};

export class TaskService {
  private readonly namespaces = new Map<string, Namespace>();
  /**
   * Resolves once a process's /tasks/start (a container's) or /tasks/exec-started (an exec's)
   * is queued, so its /tasks/exit never overtakes it.
   */
  private readonly startQueued = new WeakMap<Process, Promise<void>>();
  /** Resolves once a container's /tasks/exit is queued, so its /tasks/delete never overtakes it. */
  private readonly exitQueued = new WeakMap<Container, Promise<void>>();
  /** Resolves once Wait may answer: the OOM count is read, and a kill's /tasks/oom is queued. */
  private readonly exitAnswerable = new WeakMap<Process, Promise<unknown>>();
  private draining = false;
  /**
   * Kills under way, per container (its init's and its execs'). A Delete waits for them:
   * containerd closes its connection to us once a task's Delete, and the Shutdown after it,
   * are answered, and a Kill it is still waiting for then fails on its side with "ttrpc:
   * closed". They meet when a Kill's signal ends the process before the runtime's kill has
   * returned: the exit is reported at once (Wait answers), and CRI's exit monitor deletes
   * the task while the Kill that caused it (StopPodSandbox's, of the pause container) is
   * still in `runc kill`. runc-v2 orders them by its process lock, which Kill, Delete and the
   * record of the exit all take.
   */
  private readonly killsUnderWay = new WeakMap<Container, Set<Promise<unknown>>>();

  constructor(private readonly o: TaskServiceOptions) {}

  /** Containers being served, in every namespace. */
  get size(): number {
    let n = 0;
    for (const ns of this.namespaces.values()) n += ns.containers.size + ns.creating.size;
    return n;
  }

  /**
   * Every container served, with its task's state and how it runs (the shared-mode daemon's
   * metrics). Creates under way are not in it yet.
   */
  list(): { namespace: string; id: string; state: TaskState; kind: Instance["kind"] }[] {
    const out: { namespace: string; id: string; state: TaskState; kind: Instance["kind"] }[] = [];
    for (const [namespace, ns] of this.namespaces)
      for (const c of ns.containers.values()) out.push({ namespace, id: c.id, state: c.state, kind: c.kind });
    return out;
  }

  /** A container's statistics as its runtime reports them (a pod's metrics add them up). */
  async runtimeStats(namespace: string, id: string): Promise<RuncStats> {
    const { c } = this.find(namespaceContext(namespace), id, "stats");
    return c.transition("stats", () => c.stats());
  }

  /** Set once Shutdown has decided to stop: no Create is taken from then on. */
  get shuttingDown(): boolean {
    return this.draining;
  }

  async create(req: CreateTaskRequest, ctx?: CallContext): Promise<CreateTaskResponse> {
    if (this.draining) throw new TtrpcError(Code.UNAVAILABLE, "shim is shutting down");
    const nsName = this.namespaceName(ctx);
    // containerd's own rule for ids; it also keeps an id from naming a path elsewhere.
    if (!VALID_ID.test(req.id)) throw new TtrpcError(Code.INVALID_ARGUMENT, `container id ${JSON.stringify(req.id)} is not valid`);
    const ns = this.namespace(nsName);
    if (ns.containers.has(req.id) || ns.creating.has(req.id)) {
      throw new TtrpcError(Code.ALREADY_EXISTS, `container ${req.id} in namespace ${nsName}: already exists`);
    }
    if (req.checkpoint) throw new TtrpcError(Code.UNIMPLEMENTED, "restoring from a checkpoint is not supported");
    const runtimeOptions = await runtimeOptionsOf(req.options);
    if (ns.containers.has(req.id) || ns.creating.has(req.id)) {
      throw new TtrpcError(Code.ALREADY_EXISTS, `container ${req.id} in namespace ${nsName}: already exists`);
    }
    ns.creating.add(req.id);
    let c: Container;
    try {
      c = await Container.create(
        this.o.host,
        ns.host,
        {
          namespace: nsName,
          id: req.id,
          bundle: req.bundle,
          rootfs: req.rootfs,
          terminal: req.terminal,
          stdin: req.stdin,
          stdout: req.stdout,
          stderr: req.stderr,
          runtimeOptions,
        },
        this.eventsOf(ns),
      );
    } finally {
      ns.creating.delete(req.id);
    }
    ns.containers.set(req.id, c);
    ns.host.events.publish(
      "/tasks/create",
      encodeEvent(TaskCreate, {
        containerId: req.id,
        bundle: req.bundle,
        rootfs: req.rootfs,
        io: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal },
        checkpoint: req.checkpoint,
        pid: c.pid,
      }),
    );
    c.watchExit();
    return { pid: c.pid };
  }

  async start(req: StartRequest, ctx?: CallContext): Promise<StartResponse> {
    const { ns, c, p } = this.findProcess(ctx, req.id, req.execId, "start");
    let queued: (() => void) | undefined;
    try {
      await p.transition("start", () => {
        // Only a Start the table let through holds back the exit event (a refused one must
        // not release the hold of the Start under way).
        this.startQueued.set(p, new Promise((r) => (queued = r)));
        return p.start();
      });
      ns.host.events.publish(...startedEvent(c, p));
      return { pid: p.pid };
    } finally {
      queued?.();
    }
  }

  async state(req: StateRequest, ctx?: CallContext): Promise<StateResponse> {
    const { c, p } = this.findProcess(ctx, req.id, req.execId, "state");
    p.check("state");
    return {
      id: p.id,
      bundle: c.opts.bundle,
      pid: p.pid,
      status: p.status(),
      stdin: p.io.stdin,
      stdout: p.io.stdout,
      stderr: p.io.stderr,
      terminal: p.io.terminal,
      exitStatus: p.exit?.status ?? 0,
      exitedAt: p.exit ? timestamp(p.exit.at) : undefined,
      execId: p.execId,
    };
  }

  async wait(req: WaitRequest, ctx?: CallContext): Promise<WaitResponse> {
    const { p } = this.findProcess(ctx, req.id, req.execId, "wait");
    p.check("wait");
    const exit = await p.exited;
    // Not before an OOM kill is queued for containerd: CRI's exit monitor acts on this answer
    // and must find the TaskOOM ahead of it (its reason "OOMKilled").
    await this.exitAnswerable.get(p);
    return { exitStatus: exit.status, exitedAt: timestamp(exit.at) };
  }

  async kill(req: KillRequest, ctx?: CallContext): Promise<Empty> {
    const { c, p } = this.findProcess(ctx, req.id, req.execId, "kill");
    const killing = p.transition("kill", () => p.kill(req.signal, req.all), { all: req.all });
    let kills = this.killsUnderWay.get(c);
    if (kills === undefined) this.killsUnderWay.set(c, (kills = new Set()));
    kills.add(killing);
    try {
      await killing;
    } finally {
      kills.delete(killing);
    }
    return EMPTY;
  }

  /**
   * No event for an exec's: runc-v2 publishes /tasks/delete for a task's init only. Answered
   * only after the Kills of the container under way (see killsUnderWay).
   */
  async delete(req: DeleteRequest, ctx?: CallContext): Promise<DeleteResponse> {
    const { c, p } = this.findProcess(ctx, req.id, req.execId, "delete");
    const kills = this.killsUnderWay.get(c);
    while (kills !== undefined && kills.size > 0) await Promise.allSettled([...kills]);
    const exit = await p.delete();
    return { pid: p.pid, exitStatus: exit?.status ?? 0, exitedAt: exit ? timestamp(exit.at) : undefined };
  }

  /**
   * Delete for containerd's `shim delete` (the daemon's manager): final, since containerd
   * forgets the task once that returns and nobody would retry. What cannot be cleaned up is
   * logged and returned instead of keeping the container; the caller cleans from outside
   * what it can (src/runtime-v2/delete.ts).
   */
  async deleteFinal(req: DeleteRequest, ctx?: CallContext): Promise<DeleteResponse & { failed: string[] }> {
    const { c } = this.find(ctx, req.id, "delete");
    const { exit, failed } = await c.remove(true);
    return { pid: c.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at), failed };
  }

  async pids(req: PidsRequest, ctx?: CallContext): Promise<PidsResponse> {
    const { c } = this.find(ctx, req.id, "pids");
    const pids = await c.transition("pids", () => c.pids());
    const execOf = new Map<number, string>();
    for (const e of c.execs.values()) if (e.pid > 0 && e.exit === null) execOf.set(e.pid, e.id);
    return {
      processes: pids.map((pid) => {
        const execId = execOf.get(pid);
        return { pid, info: execId === undefined ? undefined : processDetails(execId) };
      }),
    };
  }

  async pause(req: PauseRequest, ctx?: CallContext): Promise<Empty> {
    const { ns, c } = this.find(ctx, req.id, "pause");
    await c.transition("pause", () => c.pause());
    ns.host.events.publish("/tasks/paused", encodeEvent(TaskPaused, { containerId: c.id }));
    return EMPTY;
  }

  async resume(req: ResumeRequest, ctx?: CallContext): Promise<Empty> {
    const { ns, c } = this.find(ctx, req.id, "resume");
    await c.transition("resume", () => c.resume());
    ns.host.events.publish("/tasks/resumed", encodeEvent(TaskResumed, { containerId: c.id }));
    return EMPTY;
  }

  async closeIO(req: CloseIORequest, ctx?: CallContext): Promise<Empty> {
    const { p } = this.findProcess(ctx, req.id, req.execId, "closeIO");
    // Without a terminal the process holds stdin's fifo itself and we hold no writer:
    // containerd closes its own for EOF. With one, we copy stdin and hold a writer to let go.
    await p.transition("closeIO", async () => {
      if (req.stdin) await p.terminal?.closeStdin();
    });
    return EMPTY;
  }

  async stats(req: StatsRequest, ctx?: CallContext): Promise<StatsResponse> {
    const { c } = this.find(ctx, req.id, "stats");
    const stats = await c.transition("stats", () => c.stats());
    return { stats: this.o.host.metrics(stats) };
  }

  async connect(req: ConnectRequest, ctx?: CallContext): Promise<ConnectResponse> {
    const c = this.namespaces.get(this.namespaceName(ctx))?.containers.get(req.id);
    return { shimPid: this.o.shimPid, taskPid: c?.pid ?? 0, version: SHIM_VERSION };
  }

  /**
   * Stops the server only once no container is left, whatever `now` says: runc-v2 does the
   * same (its Shutdown returns at once while it serves containers and never reads `now`),
   * since exiting would orphan live containers and lose their exits. containerd sends it
   * after each Delete; the last one stops us.
   */
  async shutdown(_req: ShutdownRequest): Promise<Empty> {
    if (this.size === 0 && !this.o.holdsOpen?.()) {
      this.draining = true;
      // After this answer is on its way: the host's shutdown closes the server.
      setTimeout(() => this.o.onShutdown(), 0);
    }
    return EMPTY;
  }

  async exec(req: ExecProcessRequest, ctx?: CallContext): Promise<Empty> {
    const { ns, c } = this.find(ctx, req.id, "exec");
    if (!VALID_ID.test(req.execId)) throw new TtrpcError(Code.INVALID_ARGUMENT, `exec id ${JSON.stringify(req.execId)} is not valid`);
    const process = parseProcess(req);
    c.check("exec");
    const e = await c.addExec(
      { execId: req.execId, terminal: req.terminal, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr },
      process,
    );
    ns.host.events.publish("/tasks/exec-added", encodeEvent(TaskExecAdded, { containerId: c.id, execId: e.id }));
    return EMPTY;
  }

  async resizePty(req: ResizePtyRequest, ctx?: CallContext): Promise<Empty> {
    const { p } = this.findProcess(ctx, req.id, req.execId, "resizePty");
    // Without a terminal there is nothing to resize: fine, as runc-v2.
    await p.transition("resizePty", async () => {
      try {
        p.terminal?.resize(req.width, req.height);
      } catch (e) {
        throw new TtrpcError(Code.UNKNOWN, String(e instanceof Error ? e.message : e));
      }
    });
    return EMPTY;
  }

  /** New cgroup limits (CRI's UpdateContainerResources), through the runtime's update. */
  async update(req: UpdateTaskRequest, ctx?: CallContext): Promise<Empty> {
    const { c } = this.find(ctx, req.id, "update");
    const resources = linuxResourcesJson(req);
    await c.transition("update", () => c.update(resources));
    return EMPTY;
  }

  async checkpoint(req: CheckpointTaskRequest): Promise<Empty> {
    return this.unimplemented(req.id, "checkpoint");
  }

  /**
   * A call the table refuses in every state: UNIMPLEMENTED whether or not the container is
   * there (what the shim always answered, and docs/running.md "Not done yet" says), so the answer does not
   * depend on a lookup.
   */
  private unimplemented(id: string, call: TaskCall): never {
    const rule = ruleFor("running", call);
    if (rule.allow) throw new TtrpcError(Code.INTERNAL, `${call}: the state table allows a call this shim does not implement`);
    throw refusal(id, "running", call, rule);
  }

  /** What a container of `ns` tells the service: the events go out in containerd's order. */
  private eventsOf(ns: Namespace): ContainerEvents {
    return {
      exited: (c) => this.onExit(ns, c),
      execExited: (c, e) => this.publishOnceStarted(e, () => this.publishExit(ns, c, e)),
      oom: (c) => this.publishOnceStarted(c, () => ns.host.events.publish("/tasks/oom", encodeEvent(TaskOOM, { containerId: c.id }))),
      removed: async (c, exit) => {
        // The exit (and an OOM) go out first; the id stays taken until the delete is queued.
        await this.exitQueued.get(c);
        ns.containers.delete(c.id);
        ns.host.events.publish(
          "/tasks/delete",
          encodeEvent(TaskDelete, { containerId: c.id, pid: c.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at), id: "" }),
        );
      },
    };
  }

  /**
   * Publishes the init's exit: after the container's /tasks/start, and after its /tasks/oom
   * when the cgroup OOM-killed (runc-v2's order: containerd's CRI takes the reason "OOMKilled"
   * from the TaskOOM, so it must be there when the exit is handled).
   */
  private onExit(ns: Namespace, c: Container): void {
    const started = this.startQueued.get(c);
    const oom = c.oomKilled();
    if (!started && !oom) {
      this.publishExit(ns, c, c);
      return;
    }
    const queued = (async () => {
      const killed = (await oom) ?? false;
      await started;
      if (killed) ns.host.events.publish("/tasks/oom", encodeEvent(TaskOOM, { containerId: c.id }));
      this.publishExit(ns, c, c);
    })();
    this.exitQueued.set(c, queued);
    // Without a kill Wait need not wait for the events (they may wait for a Start under way).
    if (oom)
      this.exitAnswerable.set(
        c,
        oom.then((killed) => (killed ? queued : undefined)),
      );
  }

  /** /tasks/exit of process `p` of container `c`: `id` is the exec id, or the container's. */
  private publishExit(ns: Namespace, c: Container, p: Process): void {
    const exit = p.exit!;
    ns.host.events.publish(
      "/tasks/exit",
      encodeEvent(TaskExit, { containerId: c.id, id: p.id, pid: p.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at) }),
    );
  }

  /** Runs `publish` once `p`'s own start event is queued (at once when no Start is under way). */
  private publishOnceStarted(p: Process, publish: () => void): void {
    const started = this.startQueued.get(p);
    if (started) void started.then(publish);
    else publish();
  }

  private namespaceName(ctx: CallContext | undefined): string {
    const name = namespaceOf(ctx, this.o.defaultNamespace);
    // It names directories (the runtime root, the state dir): containerd's identifier rule.
    if (!VALID_ID.test(name)) throw new TtrpcError(Code.INVALID_ARGUMENT, `namespace ${JSON.stringify(name)} is not valid`);
    return name;
  }

  private namespace(name: string): Namespace {
    let ns = this.namespaces.get(name);
    if (ns === undefined) {
      ns = { host: this.o.host.namespace(name), containers: new Map(), creating: new Set() };
      this.namespaces.set(name, ns);
    }
    return ns;
  }

  /** The container a call is for; NOT_FOUND (as runc-v2) when it is not. */
  private find(ctx: CallContext | undefined, id: string, call: TaskCall): { ns: Namespace; c: Container } {
    const name = this.namespaceName(ctx);
    const ns = this.namespaces.get(name);
    const c = ns?.containers.get(id);
    if (ns === undefined || c === undefined)
      throw new TtrpcError(Code.NOT_FOUND, `${call} container ${id} in namespace ${name}: not found`);
    return { ns, c };
  }

  /**
   * The process a call names: container `id`'s exec `execId`, or its init when that is "".
   * NOT_FOUND when either is not there (an exec never added, or deleted).
   */
  private findProcess(
    ctx: CallContext | undefined,
    id: string,
    execId: string,
    call: TaskCall,
  ): { ns: Namespace; c: Container; p: Process } {
    const { ns, c } = this.find(ctx, id, call);
    if (execId === "") return { ns, c, p: c };
    const e = c.execs.get(execId);
    if (e === undefined) throw new TtrpcError(Code.NOT_FOUND, `${call} exec ${execId} in container ${c.id}: process does not exist`);
    return { ns, c, p: e };
  }
}

/** A Start's event: /tasks/start for a container's init, /tasks/exec-started for an exec. */
function startedEvent(c: Container, p: Process): [string, EncodedEvent] {
  if (p === c) return ["/tasks/start", encodeEvent(TaskStart, { containerId: c.id, pid: c.pid })];
  return ["/tasks/exec-started", encodeEvent(TaskExecStarted, { containerId: c.id, execId: p.execId, pid: p.pid })];
}

/**
 * The OCI LinuxResources of an Update, as JSON text for the runtime. containerd sends them
 * as JSON in an Any (typeurl's encoding of a Go struct that is not a proto message), type
 * types.containerd.io/opencontainers/runtime-spec/1/LinuxResources; other types are refused
 * rather than guessed at.
 */
export function linuxResourcesJson(req: UpdateTaskRequest): string {
  const any = req.resources;
  if (any === undefined || !any.typeUrl.endsWith("/LinuxResources")) {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `update ${req.id}: resources must be an OCI LinuxResources, got ${any?.typeUrl || "none"}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(any.value));
  } catch (e) {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `update ${req.id}: resources are not JSON: ${String(e)}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `update ${req.id}: resources are not a JSON object`);
  }
  return JSON.stringify(parsed);
}
