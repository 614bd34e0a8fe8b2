// containerd's Task service over our containers. Served twice, as containerd.task.v2.Task
// and containerd.task.v3.Task: the messages are the same, only the package differs.

import { SHIM_VERSION } from "../common/constants.ts";
import { Code, type ServiceImplementation, TtrpcError } from "../ttrpc/index.ts";
import { type Container, type ContainerHost, Container as ContainerImpl, type Exit } from "./container.ts";
import { type EventSink, encodeEvent, timestamp } from "./events.ts";
import { TaskCreate, TaskDelete, TaskExit, TaskPaused, TaskResumed, TaskStart } from "./gen/containerd/events/task.ts";
import type { TaskDefinition } from "./gen/containerd/runtime/task/v2/shim.ts";
import { Status } from "./gen/containerd/types/task/task.ts";
import type { Timestamp } from "./gen/google/protobuf/timestamp.ts";
import { metricsAny } from "./stats.ts";

export interface TaskServiceOptions {
  host: Omit<ContainerHost, "onExit">;
  events: EventSink;
  /** Called when Shutdown finds nothing left to serve. */
  onShutdown(): void;
}

const NO_TIME: Timestamp | undefined = undefined;

/** containerd's identifier rule (pkg/identifiers): alphanumerics joined by . _ -, at most 76. */
const VALID_ID = /^(?=.{1,76}$)[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

export function createTaskService(
  o: TaskServiceOptions,
): ServiceImplementation<typeof TaskDefinition> & { containers: Map<string, Container> } {
  const containers = new Map<string, Container>();
  /** Ids whose Create is under way: a second Create of one must not touch the first's files. */
  const creating = new Set<string>();
  const deletes = new Map<string, Promise<Exit>>();
  let draining = false;
  /** Resolves once a container's /tasks/start is queued, so its /tasks/exit never overtakes it. */
  const startQueued = new Map<string, Promise<void>>();

  const host: ContainerHost = {
    ...o.host,
    onExit(c) {
      const exit = c.exit!;
      const publish = () =>
        o.events.publish(
          "/tasks/exit",
          encodeEvent(TaskExit, { containerId: c.id, id: c.id, pid: c.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at) }),
        );
      const started = startQueued.get(c.id);
      if (started) void started.then(publish);
      else publish();
    },
  };

  const get = (id: string, execId = ""): Container => {
    if (execId) throw new TtrpcError(Code.NOT_FOUND, `exec ${execId} in container ${id}: execs are not supported yet`);
    const c = containers.get(id);
    if (c === undefined) throw new TtrpcError(Code.NOT_FOUND, `container ${id}: not found`);
    return c;
  };

  const unsupported = (what: string) => async (): Promise<never> => {
    throw new TtrpcError(Code.UNIMPLEMENTED, `${what} is not supported by this shim`);
  };

  return {
    containers,

    async create(req) {
      if (draining) throw new TtrpcError(Code.UNAVAILABLE, "shim is shutting down");
      // containerd's own rule for ids; it also keeps an id from naming a path elsewhere.
      if (!VALID_ID.test(req.id)) throw new TtrpcError(Code.INVALID_ARGUMENT, `container id ${JSON.stringify(req.id)} is not valid`);
      if (containers.has(req.id) || creating.has(req.id)) throw new TtrpcError(Code.ALREADY_EXISTS, `container ${req.id}: already exists`);
      if (req.checkpoint) throw new TtrpcError(Code.UNIMPLEMENTED, "restoring from a checkpoint is not supported");
      creating.add(req.id);
      const c = await ContainerImpl.create(host, {
        id: req.id,
        bundle: req.bundle,
        rootfs: req.rootfs,
        terminal: req.terminal,
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
      }).finally(() => creating.delete(req.id));
      containers.set(req.id, c);
      o.events.publish(
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
      return { pid: c.pid };
    },

    async start(req) {
      const c = get(req.id, req.execId);
      let queued!: () => void;
      startQueued.set(c.id, new Promise((r) => (queued = r)));
      try {
        const pid = await c.start();
        o.events.publish("/tasks/start", encodeEvent(TaskStart, { containerId: c.id, pid }));
        return { pid };
      } finally {
        queued();
      }
    },

    async state(req) {
      const c = get(req.id, req.execId);
      return {
        id: c.id,
        bundle: c.opts.bundle,
        pid: c.pid,
        status: c.status,
        stdin: c.opts.stdin,
        stdout: c.opts.stdout,
        stderr: c.opts.stderr,
        terminal: c.opts.terminal,
        exitStatus: c.exit?.status ?? 0,
        exitedAt: c.exit ? timestamp(c.exit.at) : NO_TIME,
        execId: "",
      };
    },

    async wait(req) {
      const c = get(req.id, req.execId);
      const exit = await c.exited;
      return { exitStatus: exit.status, exitedAt: timestamp(exit.at) };
    },

    async kill(req) {
      await get(req.id, req.execId).kill(req.signal, req.all);
      return {};
    },

    async delete(req) {
      const c = get(req.id, req.execId);
      // One delete per container: a second caller waits for the first and gets its answer.
      let deleting = deletes.get(c.id);
      if (deleting === undefined) {
        deleting = c.delete().then((exit) => {
          containers.delete(c.id);
          startQueued.delete(c.id);
          o.events.publish(
            "/tasks/delete",
            encodeEvent(TaskDelete, { containerId: c.id, pid: c.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at), id: "" }),
          );
          return exit;
        });
        deletes.set(c.id, deleting);
        void deleting.catch(() => {}).finally(() => deletes.delete(c.id));
      }
      const exit = await deleting;
      return { pid: c.pid, exitStatus: exit.status, exitedAt: timestamp(exit.at) };
    },

    async pids(req) {
      const pids = await get(req.id).pids();
      return { processes: pids.map((pid) => ({ pid, info: undefined })) };
    },

    async pause(req) {
      const c = get(req.id);
      await c.pause();
      o.events.publish("/tasks/paused", encodeEvent(TaskPaused, { containerId: c.id }));
      return {};
    },

    async resume(req) {
      const c = get(req.id);
      await c.resume();
      o.events.publish("/tasks/resumed", encodeEvent(TaskResumed, { containerId: c.id }));
      return {};
    },

    async connect(req) {
      const c = containers.get(req.id);
      return { shimPid: process.pid, taskPid: c?.pid ?? 0, version: SHIM_VERSION };
    },

    async shutdown(req) {
      if (req.now || (containers.size === 0 && creating.size === 0)) {
        draining = true;
        setTimeout(() => o.onShutdown(), 0);
      }
      return {};
    },

    async closeIO(req) {
      get(req.id, req.execId);
      // The container holds stdin's fifo itself; containerd closes its writer for EOF.
      return {};
    },

    async stats(req) {
      return { stats: metricsAny(await get(req.id).stats()) };
    },

    exec: unsupported("Exec (running another process in a container)"),
    resizePty: unsupported("ResizePty (terminal=true containers)"),
    checkpoint: unsupported("Checkpoint"),
    update: unsupported("Update (changing resources of a running container)"),
  };
}

export { Status };
