// containerd's Task service over our containers, as a value: everything it touches comes in
// through its options (src/task/host.ts), so a process may hold one per sandbox or one for
// every pod of a node. Served twice, as containerd.task.v2.Task and containerd.task.v3.Task:
// the messages are the same, only the package differs.
//
// Containers are keyed by (namespace, id): the namespace of a call is the one containerd
// puts in its ttrpc metadata, else the shim's -namespace flag. Whether a call may run in a
// task's state, and what it makes of it, is src/task/state.ts's to say.

import { SHIM_VERSION } from "../common/constants.ts";
import { SIGNALS, signaledStatus } from "../common/signals.ts";
import { type CallContext, Code, TtrpcError } from "../ttrpc/index.ts";
import { Container } from "./container.ts";
import { encodeEvent, timestamp } from "./events.ts";
import { TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskPaused, TaskResumed, TaskStart } from "./gen/containerd/events/task.ts";
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
import type { Exit, NamespaceHost, TaskHost } from "./host.ts";
import { runtimeOptionsOf } from "./runtime-options.ts";
import { check, refusal, ruleFor, statusOf, type TaskCall } from "./state.ts";

/** The ttrpc metadata key containerd's Go client sets to the call's namespace (pkg/namespaces/ttrpc.go). */
export const NAMESPACE_METADATA_KEY = "containerd-namespace-ttrpc";

/** How long Delete of a never-started container waits for its init to go once the runtime removed it. */
const CREATED_EXIT_WAIT_MS = 5000;

export interface TaskServiceOptions {
  host: TaskHost;
  /** The namespace of calls whose metadata names none: the shim's -namespace flag. */
  defaultNamespace: string;
  /** What Connect reports as the shim's pid. */
  shimPid: number;
  /** Called when Shutdown finds nothing left to serve, or is told to stop now. */
  onShutdown(): void;
}

/** containerd's identifier rule (pkg/identifiers): alphanumerics joined by . _ -, at most 76. */
const VALID_ID = /^(?=.{1,76}$)[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

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
  /** Resolves once a container's /tasks/start is queued, so its /tasks/exit never overtakes it. */
  private readonly startQueued = new WeakMap<Container, Promise<void>>();
  /** Resolves once a container's /tasks/exit is queued, so its /tasks/delete never overtakes it. */
  private readonly exitQueued = new WeakMap<Container, Promise<void>>();
  /** Resolves once Wait may answer: the OOM count is read, and a kill's /tasks/oom is queued. */
  private readonly exitAnswerable = new WeakMap<Container, Promise<unknown>>();
  private draining = false;

  constructor(private readonly o: TaskServiceOptions) {}

  /** Containers being served, in every namespace. */
  get size(): number {
    let n = 0;
    for (const ns of this.namespaces.values()) n += ns.containers.size + ns.creating.size;
    return n;
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
        (exited) => this.onExit(ns, exited),
        (killed) => this.onOom(ns, killed),
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
    c.watchExit(this.o.host);
    return { pid: c.pid };
  }

  async start(req: StartRequest, ctx?: CallContext): Promise<StartResponse> {
    const { ns, c } = this.find(ctx, req.id, req.execId, "start");
    let queued: (() => void) | undefined;
    try {
      await c.transition("start", () => {
        // Only a Start the table let through holds back the exit event (a refused one must
        // not release the hold of the Start under way).
        this.startQueued.set(c, new Promise((r) => (queued = r)));
        return c.start();
      });
      ns.host.events.publish("/tasks/start", encodeEvent(TaskStart, { containerId: c.id, pid: c.pid }));
      return { pid: c.pid };
    } finally {
      queued?.();
    }
  }

  async state(req: StateRequest, ctx?: CallContext): Promise<StateResponse> {
    const { c } = this.find(ctx, req.id, req.execId, "state");
    check(c.id, c.state, "state");
    return {
      id: c.id,
      bundle: c.opts.bundle,
      pid: c.pid,
      status: statusOf(c.state, c.busy === "pause"),
      stdin: c.opts.stdin,
      stdout: c.opts.stdout,
      stderr: c.opts.stderr,
      terminal: c.opts.terminal,
      exitStatus: c.exit?.status ?? 0,
      exitedAt: c.exit ? timestamp(c.exit.at) : undefined,
      execId: "",
    };
  }

  async wait(req: WaitRequest, ctx?: CallContext): Promise<WaitResponse> {
    const { c } = this.find(ctx, req.id, req.execId, "wait");
    check(c.id, c.state, "wait");
    const exit = await c.exited;
    // Not before an OOM kill is queued for containerd: CRI's exit monitor acts on this answer
    // and must find the TaskOOM ahead of it (its reason "OOMKilled").
    await this.exitAnswerable.get(c);
    return { exitStatus: exit.status, exitedAt: timestamp(exit.at) };
  }

  async kill(req: KillRequest, ctx?: CallContext): Promise<Empty> {
    const { c } = this.find(ctx, req.id, req.execId, "kill");
    await c.transition("kill", () => c.kill(req.signal, req.all), { all: req.all });
    return EMPTY;
  }

  async delete(req: DeleteRequest, ctx?: CallContext): Promise<DeleteResponse> {
    const { ns, c } = this.find(ctx, req.id, req.execId, "delete");
    // One delete per container: a second caller waits for the first and gets its answer.
    c.deleting ??= this.remove(ns, c).finally(() => {
      c.deleting = null;
    });
    const exit = await c.deleting;
    return { pid: c.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at) };
  }

  async pids(req: PidsRequest, ctx?: CallContext): Promise<PidsResponse> {
    const { c } = this.find(ctx, req.id, "", "pids");
    const pids = await c.transition("pids", () => c.pids());
    return { processes: pids.map((pid) => ({ pid, info: undefined })) };
  }

  async pause(req: PauseRequest, ctx?: CallContext): Promise<Empty> {
    const { ns, c } = this.find(ctx, req.id, "", "pause");
    await c.transition("pause", () => c.pause());
    ns.host.events.publish("/tasks/paused", encodeEvent(TaskPaused, { containerId: c.id }));
    return EMPTY;
  }

  async resume(req: ResumeRequest, ctx?: CallContext): Promise<Empty> {
    const { ns, c } = this.find(ctx, req.id, "", "resume");
    await c.transition("resume", () => c.resume());
    ns.host.events.publish("/tasks/resumed", encodeEvent(TaskResumed, { containerId: c.id }));
    return EMPTY;
  }

  async closeIO(req: CloseIORequest, ctx?: CallContext): Promise<Empty> {
    const { c } = this.find(ctx, req.id, req.execId, "closeIO");
    // The container holds stdin's fifo itself; containerd closes its writer for EOF.
    check(c.id, c.state, "closeIO");
    return EMPTY;
  }

  async stats(req: StatsRequest, ctx?: CallContext): Promise<StatsResponse> {
    const { c } = this.find(ctx, req.id, "", "stats");
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
    if (this.size === 0) {
      this.draining = true;
      // After this answer is on its way: the host's shutdown closes the server.
      setTimeout(() => this.o.onShutdown(), 0);
    }
    return EMPTY;
  }

  async exec(req: ExecProcessRequest): Promise<Empty> {
    return this.unimplemented(req.id, "exec");
  }

  async resizePty(req: ResizePtyRequest): Promise<Empty> {
    return this.unimplemented(req.id, "resizePty");
  }

  /** New cgroup limits (CRI's UpdateContainerResources), through the runtime's update. */
  async update(req: UpdateTaskRequest, ctx?: CallContext): Promise<Empty> {
    const { c } = this.find(ctx, req.id, "", "update");
    const resources = linuxResourcesJson(req);
    await c.transition("update", () => c.update(resources));
    return EMPTY;
  }

  async checkpoint(req: CheckpointTaskRequest): Promise<Empty> {
    return this.unimplemented(req.id, "checkpoint");
  }

  /**
   * A call the table refuses in every state: UNIMPLEMENTED whether or not the container is
   * there (what the shim always answered, and the README promises), so the answer does not
   * depend on a lookup.
   */
  private unimplemented(id: string, call: TaskCall): never {
    const rule = ruleFor("running", call);
    if (rule.allow) throw new TtrpcError(Code.INTERNAL, `${call}: the state table allows a call this shim does not implement`);
    throw refusal(id, "running", call, rule);
  }

  private async remove(ns: Namespace, c: Container): Promise<Exit> {
    const { log } = this.o.host;
    const exit = await c.transition("delete", async () => {
      const out = await c.remove(log, CREATED_EXIT_WAIT_MS, signaledStatus(SIGNALS.SIGKILL));
      // What could not be undone is kept (Delete may be retried) and said: in the log, and
      // to containerd as the error of this Delete.
      if (out.failed.length > 0) {
        for (const f of out.failed) log(`delete ${c.namespace}/${c.id}: could not clean up: ${f}`, "error");
        throw new TtrpcError(Code.UNKNOWN, `delete ${c.id}: could not clean up: ${out.failed.join("; ")}`);
      }
      return out.exit;
    });
    // The exit (and an OOM) go out first; the id stays taken until the delete is queued.
    await this.exitQueued.get(c);
    ns.containers.delete(c.id);
    ns.host.events.publish(
      "/tasks/delete",
      encodeEvent(TaskDelete, { containerId: c.id, pid: c.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at), id: "" }),
    );
    return exit;
  }

  /** An OOM kill while the container runs (not of its init, or not yet seen as its exit). */
  private onOom(ns: Namespace, c: Container): void {
    const publish = () => ns.host.events.publish("/tasks/oom", encodeEvent(TaskOOM, { containerId: c.id }));
    const started = this.startQueued.get(c);
    if (started) void started.then(publish);
    else publish();
  }

  /**
   * Publishes the exit: after the container's /tasks/start, and after its /tasks/oom when the
   * cgroup OOM-killed (runc-v2's order: containerd's CRI takes the reason "OOMKilled" from
   * the TaskOOM, so it must be there when the exit is handled).
   */
  private onExit(ns: Namespace, c: Container): void {
    const exit = c.exit!;
    const publish = () =>
      ns.host.events.publish(
        "/tasks/exit",
        encodeEvent(TaskExit, { containerId: c.id, id: c.id, pid: c.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at) }),
      );
    const started = this.startQueued.get(c);
    const oom = c.oomKilled();
    if (!started && !oom) {
      publish();
      return;
    }
    const queued = (async () => {
      const killed = (await oom) ?? false;
      await started;
      if (killed) ns.host.events.publish("/tasks/oom", encodeEvent(TaskOOM, { containerId: c.id }));
      publish();
    })();
    this.exitQueued.set(c, queued);
    // Without a kill Wait need not wait for the events (they may wait for a Start under way).
    if (oom)
      this.exitAnswerable.set(
        c,
        oom.then((killed) => (killed ? queued : undefined)),
      );
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

  /** The container a call is for; NOT_FOUND (as runc-v2) when it is not, or names an exec. */
  private find(ctx: CallContext | undefined, id: string, execId: string, call: TaskCall): { ns: Namespace; c: Container } {
    const name = this.namespaceName(ctx);
    const ns = this.namespaces.get(name);
    const c = ns?.containers.get(id);
    if (ns === undefined || c === undefined)
      throw new TtrpcError(Code.NOT_FOUND, `${call} container ${id} in namespace ${name}: not found`);
    if (execId) throw new TtrpcError(Code.NOT_FOUND, `${call} exec ${execId} in container ${id}: execs are not supported yet`);
    return { ns, c };
  }
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
