// containerd's Task service over our containers, as a value: everything it touches comes in
// through its options (src/task/host.ts), so a process may hold one per sandbox or one for
// every pod of a node. Served twice, as containerd.task.v2.Task and containerd.task.v3.Task:
// the messages are the same, only the package differs.
//
// Containers are keyed by (namespace, id): the namespace of a call is the one containerd
// puts in its ttrpc metadata, else the shim's -namespace flag. Whether a call may run in a
// task's state, and what it makes of it, is src/task/state.ts's to say.

import { SHIM_VERSION } from "../common/constants.ts";
import { VALID_ID } from "../common/identifiers.ts";
import { SIGNALS, signaledStatus } from "../common/signals.ts";
import { type CallContext, Code, TtrpcError } from "../ttrpc/index.ts";
import { Container } from "./container.ts";
import { encodeEvent, timestamp } from "./events.ts";
import type { ExecProcess } from "./exec.ts";
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
import type { Exit, NamespaceHost, OciProcess, TaskHost } from "./host.ts";
import { runtimeOptionsOf } from "./runtime-options.ts";
import { check, checkExec, execStatusOf, refusal, ruleFor, statusOf, type TaskCall } from "./state.ts";

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
  private readonly startQueued = new WeakMap<Container | ExecProcess, Promise<void>>();
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
        (container, exec) => this.onExecExit(ns, container, exec),
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
    if (req.execId) return this.startExec(req, ctx);
    const { ns, c } = this.find(ctx, req.id, "start");
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
    const { c } = this.find(ctx, req.id, "state");
    if (req.execId) {
      const e = this.findExec(c, req.execId, "state");
      checkExec(c.id, e.id, c.state, c.initExited, e.state, "state", e.busy);
      return {
        id: e.id,
        bundle: c.opts.bundle,
        pid: e.pid,
        status: execStatusOf(e.state, c.state, c.busy === "pause"),
        stdin: e.opts.stdin,
        stdout: e.opts.stdout,
        stderr: e.opts.stderr,
        terminal: e.opts.terminal,
        exitStatus: e.exit?.status ?? 0,
        exitedAt: e.exit ? timestamp(e.exit.at) : undefined,
        execId: e.id,
      };
    }
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
    const { c } = this.find(ctx, req.id, "wait");
    if (req.execId) {
      const e = this.findExec(c, req.execId, "wait");
      checkExec(c.id, e.id, c.state, c.initExited, e.state, "wait", e.busy);
      const exit = await e.exited;
      return { exitStatus: exit.status, exitedAt: timestamp(exit.at) };
    }
    check(c.id, c.state, "wait");
    const exit = await c.exited;
    // Not before an OOM kill is queued for containerd: CRI's exit monitor acts on this answer
    // and must find the TaskOOM ahead of it (its reason "OOMKilled").
    await this.exitAnswerable.get(c);
    return { exitStatus: exit.status, exitedAt: timestamp(exit.at) };
  }

  async kill(req: KillRequest, ctx?: CallContext): Promise<Empty> {
    const { c } = this.find(ctx, req.id, "kill");
    if (req.execId) {
      const e = this.findExec(c, req.execId, "kill");
      await c.execTransition(e, "kill", async () => c.killExec(e, req.signal));
      return EMPTY;
    }
    await c.transition("kill", () => c.kill(req.signal, req.all), { all: req.all });
    return EMPTY;
  }

  async delete(req: DeleteRequest, ctx?: CallContext): Promise<DeleteResponse> {
    const { ns, c } = this.find(ctx, req.id, "delete");
    if (req.execId) {
      // No event: runc-v2 publishes /tasks/delete for a task's init only.
      const e = this.findExec(c, req.execId, "delete");
      const exit = await c.execTransition(e, "delete", () => c.deleteExec(e));
      return { pid: e.pid, exitStatus: exit?.status ?? 0, exitedAt: exit ? timestamp(exit.at) : undefined };
    }
    // One delete per container: a second caller waits for the first and gets its answer.
    c.deleting ??= this.remove(ns, c).finally(() => {
      c.deleting = null;
    });
    const { exit } = await c.deleting;
    return { pid: c.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at) };
  }

  /**
   * Delete for containerd's `shim delete` (the daemon's manager): final, since containerd
   * forgets the task once that returns and nobody would retry. What cannot be cleaned up is
   * logged and returned instead of keeping the container; the caller cleans from outside
   * what it can (src/runtime-v2/delete.ts).
   */
  async deleteFinal(req: DeleteRequest, ctx?: CallContext): Promise<DeleteResponse & { failed: string[] }> {
    const { ns, c } = this.find(ctx, req.id, "delete");
    const { exit, failed } = await this.remove(ns, c, true);
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
    const { c } = this.find(ctx, req.id, "closeIO");
    // Without a terminal the process holds stdin's fifo itself and we hold no writer:
    // containerd closes its own for EOF. With one, we copy stdin and hold a writer to let go.
    if (req.execId) {
      const e = this.findExec(c, req.execId, "closeIO");
      await c.execTransition(e, "closeIO", async () => {
        if (req.stdin) await e.terminal?.closeStdin();
      });
      return EMPTY;
    }
    await c.transition("closeIO", async () => {
      if (req.stdin) await c.terminal?.closeStdin();
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
    if (this.size === 0) {
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
    check(c.id, c.state, "exec");
    const e = await c.addExec(
      { execId: req.execId, terminal: req.terminal, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr },
      process,
    );
    ns.host.events.publish("/tasks/exec-added", encodeEvent(TaskExecAdded, { containerId: c.id, execId: e.id }));
    return EMPTY;
  }

  async resizePty(req: ResizePtyRequest, ctx?: CallContext): Promise<Empty> {
    const { c } = this.find(ctx, req.id, "resizePty");
    const resize = (t: { resize(w: number, h: number): void } | null) => async () => {
      try {
        t?.resize(req.width, req.height);
      } catch (e) {
        throw new TtrpcError(Code.UNKNOWN, String(e instanceof Error ? e.message : e));
      }
    };
    if (req.execId) {
      const e = this.findExec(c, req.execId, "resizePty");
      await c.execTransition(e, "resizePty", () => resize(e.terminal)());
      return EMPTY;
    }
    // Without a terminal there is nothing to resize: fine, as runc-v2.
    await c.transition("resizePty", () => resize(c.terminal)());
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
   * there (what the shim always answered, and the README promises), so the answer does not
   * depend on a lookup.
   */
  private unimplemented(id: string, call: TaskCall): never {
    const rule = ruleFor("running", call);
    if (rule.allow) throw new TtrpcError(Code.INTERNAL, `${call}: the state table allows a call this shim does not implement`);
    throw refusal(id, "running", call, rule);
  }

  private async startExec(req: StartRequest, ctx?: CallContext): Promise<StartResponse> {
    const { ns, c } = this.find(ctx, req.id, "start");
    const e = this.findExec(c, req.execId, "start");
    let queued: (() => void) | undefined;
    try {
      await c.execTransition(e, "start", () => {
        this.startQueued.set(e, new Promise((r) => (queued = r)));
        return c.startExec(e);
      });
      ns.host.events.publish("/tasks/exec-started", encodeEvent(TaskExecStarted, { containerId: c.id, execId: e.id, pid: e.pid }));
      return { pid: e.pid };
    } finally {
      queued?.();
    }
  }

  /** `final`: failures are returned, and the container goes all the same (deleteFinal). */
  private async remove(ns: Namespace, c: Container, final = false): Promise<{ exit: Exit; failed: string[] }> {
    const { log } = this.o.host;
    const { exit, failed } = await c.transition("delete", async () => {
      const out = await c.remove(log, CREATED_EXIT_WAIT_MS, signaledStatus(SIGNALS.SIGKILL));
      // What could not be undone is kept (Delete may be retried) and said: in the log, and
      // to containerd as the error of this Delete.
      if (out.failed.length > 0) {
        for (const f of out.failed) log(`delete ${c.namespace}/${c.id}: could not clean up: ${f}`, "error");
        if (!final) throw new TtrpcError(Code.UNKNOWN, `delete ${c.id}: could not clean up: ${out.failed.join("; ")}`);
      }
      return out;
    });
    // The exit (and an OOM) go out first; the id stays taken until the delete is queued.
    await this.exitQueued.get(c);
    ns.containers.delete(c.id);
    ns.host.events.publish(
      "/tasks/delete",
      encodeEvent(TaskDelete, { containerId: c.id, pid: c.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at), id: "" }),
    );
    return { exit, failed };
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

  /** An exec's exit: /tasks/exit with the exec id, after its /tasks/exec-started. */
  private onExecExit(ns: Namespace, c: Container, e: ExecProcess): void {
    const exit = e.exit!;
    const publish = () =>
      ns.host.events.publish(
        "/tasks/exit",
        encodeEvent(TaskExit, { containerId: c.id, id: e.id, pid: e.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at) }),
      );
    const started = this.startQueued.get(e);
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

  /** The exec process a call names; NOT_FOUND when there is none (never added, or deleted). */
  private findExec(c: Container, execId: string, call: string): ExecProcess {
    const e = c.execs.get(execId);
    if (e === undefined) throw new TtrpcError(Code.NOT_FOUND, `${call} exec ${execId} in container ${c.id}: process does not exist`);
    return e;
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
