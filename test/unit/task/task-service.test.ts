// The Task service as a value, driven with a fake host (no root, no runc, no containerd):
// every call in every state against the state table, the order of events, calls side by
// side, and containers of two namespaces that share an id.
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { RuncError } from "../../../src/linux/runc.ts";
import { TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskStart } from "../../../src/task/gen/containerd/events/task.ts";
import { Options as RuncOptions } from "../../../src/task/gen/containerd/runc/options/oci.ts";
import {
  CheckpointTaskRequest,
  CloseIORequest,
  CreateTaskRequest,
  ExecProcessRequest,
  ResizePtyRequest,
  UpdateTaskRequest,
} from "../../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Options as CriRuntimeOptions } from "../../../src/task/gen/containerd/runtimeoptions/v1/options.ts";
import { Status } from "../../../src/task/gen/containerd/types/task/task.ts";
import { loadRuntimeOptions, RUNTIME_OPTIONS_FILE } from "../../../src/task/runtime-options.ts";
import { TASK_TABLE, type TaskCall, type TaskState } from "../../../src/task/state.ts";
import { NAMESPACE_METADATA_KEY, namespaceOf, TaskService } from "../../../src/task/task-service.ts";
import { Code, TtrpcError } from "../../../src/ttrpc/index.ts";
import { ctxFor, FakeHost } from "./fake-host.ts";

const NS = "default";
let hosts: FakeHost[] = [];

function setup(opts: { defaultNamespace?: string } = {}) {
  const host = new FakeHost();
  hosts.push(host);
  let stopped!: () => void;
  const shutdown = new Promise<void>((r) => (stopped = r));
  const service = new TaskService({ host, defaultNamespace: opts.defaultNamespace ?? NS, shimPid: 4242, onShutdown: () => stopped() });
  return { host, service, shutdown };
}

afterEach(() => {
  for (const h of hosts) rmSync(h.root, { recursive: true, force: true });
  hosts = [];
});

const createReq = (id: string, extra: Partial<CreateTaskRequest> = {}) =>
  CreateTaskRequest.fromPartial({
    id,
    bundle: `/bundles/${id}`,
    rootfs: [{ type: "bind", source: "/src", target: "", options: [] }],
    ...extra,
  });

/** An Exec of `args` (an OCI process as containerd sends it) for container `id`. */
const execReq = (execId: string, args: string[] = ["/bin/sh", "-c", "true"], id = "c1", extra: Partial<ExecProcessRequest> = {}) =>
  ExecProcessRequest.fromPartial({
    id,
    execId,
    spec: {
      typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process",
      value: new TextEncoder().encode(JSON.stringify({ args, cwd: "/", env: ["PATH=/bin"] })),
    },
    ...extra,
  });

/** Rejection of `p` as a TtrpcError (fails the test if it resolves or throws anything else). */
async function refusal(p: Promise<unknown>): Promise<TtrpcError> {
  const e = await p.then(
    () => new Error("expected the call to be refused, it succeeded"),
    (err: unknown) => err,
  );
  if (!(e instanceof TtrpcError)) throw e;
  return e;
}

type Setup = ReturnType<typeof setup>;

/** A container `id` in namespace NS brought to `state` through the service's own calls. */
async function inState(s: Setup, state: Exclude<TaskState, "deleted">, id = "c1"): Promise<void> {
  const ctx = ctxFor(NS);
  await s.service.create(createReq(id), ctx);
  if (state === "created") return;
  await s.service.start({ id, execId: "" }, ctx);
  if (state === "paused") await s.service.pause({ id }, ctx);
  if (state === "stopped") {
    s.host.exit(NS, id, 3);
    await s.service.wait({ id, execId: "" }, ctx);
  }
}

async function statusOf(s: Setup, id = "c1", ns = NS): Promise<Status> {
  return (await s.service.state({ id, execId: "" }, ctxFor(ns))).status;
}

const STATUS: Record<Exclude<TaskState, "deleted">, Status> = {
  created: Status.CREATED,
  running: Status.RUNNING,
  paused: Status.PAUSED,
  stopped: Status.STOPPED,
};

/** An UpdateTaskRequest as containerd's CRI sends it: LinuxResources JSON in an Any. */
const LINUX_RESOURCES = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
const updateReq = (id: string, resources: unknown, typeUrl = LINUX_RESOURCES) =>
  UpdateTaskRequest.fromPartial({ id, resources: { typeUrl, value: new TextEncoder().encode(JSON.stringify(resources)) } });

/** Each call of the table as the service takes it, for container c1. */
const CALLS: Record<TaskCall, (s: Setup) => Promise<unknown>> = {
  start: (s) => s.service.start({ id: "c1", execId: "" }, ctxFor(NS)),
  kill: (s) => s.service.kill({ id: "c1", execId: "", signal: 15, all: false }, ctxFor(NS)),
  pause: (s) => s.service.pause({ id: "c1" }, ctxFor(NS)),
  resume: (s) => s.service.resume({ id: "c1" }, ctxFor(NS)),
  delete: (s) => s.service.delete({ id: "c1", execId: "" }, ctxFor(NS)),
  wait: (s) => s.service.wait({ id: "c1", execId: "" }, ctxFor(NS)),
  state: (s) => s.service.state({ id: "c1", execId: "" }, ctxFor(NS)),
  pids: (s) => s.service.pids({ id: "c1" }, ctxFor(NS)),
  stats: (s) => s.service.stats({ id: "c1" }, ctxFor(NS)),
  closeIO: (s) => s.service.closeIO(CloseIORequest.fromPartial({ id: "c1", stdin: true }), ctxFor(NS)),
  exec: (s) => s.service.exec(execReq("e1"), ctxFor(NS)),
  resizePty: (s) => s.service.resizePty(ResizePtyRequest.fromPartial({ id: "c1", width: 80, height: 24 }), ctxFor(NS)),
  update: (s) => s.service.update(updateReq("c1", { memory: { limit: 64 << 20 } }), ctxFor(NS)),
  checkpoint: (s) => s.service.checkpoint(CheckpointTaskRequest.fromPartial({ id: "c1" })),
};

describe("every call in every state follows the state table", () => {
  const states = ["created", "running", "paused", "stopped"] as const;
  for (const state of states) {
    for (const call of Object.keys(CALLS) as TaskCall[]) {
      const rule = TASK_TABLE[state][call];
      const what = rule.allow ? `allowed${rule.to ? `, → ${rule.to}` : ""}` : `refused with ${rule.code}`;
      test(`${state}: ${call} is ${what}`, async () => {
        const s = setup();
        await inState(s, state);
        if (!rule.allow) {
          const e = await refusal(CALLS[call](s));
          expect(e.code).toBe(rule.code);
          if (rule.code !== Code.UNIMPLEMENTED) expect(e.message).toContain(`task is ${state}`);
          expect(await statusOf(s)).toBe(STATUS[state]); // a refused call changes nothing
          return;
        }
        if (call === "wait" && state !== "stopped") {
          // Allowed, and answered once the task exits.
          const waiting = CALLS.wait(s);
          s.host.exit(NS, "c1", 7);
          expect(await waiting).toMatchObject({ exitStatus: 7 });
          return;
        }
        await CALLS[call](s);
        if (rule.to === "deleted") {
          const e = await refusal(CALLS.state(s));
          expect(e.code).toBe(Code.NOT_FOUND);
        } else if (call !== "kill") {
          expect(await statusOf(s)).toBe(STATUS[(rule.to ?? state) as Exclude<TaskState, "deleted">]);
        } else {
          // A kill changes nothing itself; the exit it causes does.
          await CALLS.wait(s);
          expect(await statusOf(s)).toBe(Status.STOPPED);
        }
      });
    }
  }

  test("the cells containerd relies on", () => {
    const cell = (s: TaskState, c: TaskCall) => {
      const r = TASK_TABLE[s][c];
      return r.allow ? (r.to ?? s) : r.code;
    };
    expect(cell("created", "start")).toBe("running");
    expect(cell("running", "pause")).toBe("paused");
    expect(cell("paused", "resume")).toBe("running");
    expect(cell("created", "delete")).toBe("deleted");
    expect(cell("stopped", "delete")).toBe("deleted");
    expect(cell("running", "delete")).toBe(Code.FAILED_PRECONDITION);
    expect(cell("paused", "delete")).toBe(Code.FAILED_PRECONDITION);
    expect(cell("stopped", "kill")).toBe(Code.NOT_FOUND);
    expect(cell("deleted", "delete")).toBe(Code.NOT_FOUND);
    expect(cell("stopped", "stats")).toBe(Code.NOT_FOUND);
    expect(cell("running", "start")).toBe(Code.FAILED_PRECONDITION);
  });

  test("kill --all of a stopped task is fine (other processes may be left)", async () => {
    const s = setup();
    await inState(s, "stopped");
    await s.service.kill({ id: "c1", execId: "", signal: 9, all: true }, ctxFor(NS));
    expect(s.host.runtime(NS).calls).toContain("kill c1 9 all");
  });

  test("a deleted task is not found by any call; a pause under way shows as PAUSING", async () => {
    const s = setup();
    await inState(s, "running");
    const gate = s.host.runtime(NS).gate("pause");
    const pausing = CALLS.pause(s);
    await gate.reached;
    expect(await statusOf(s)).toBe(Status.PAUSING);
    gate.release();
    await pausing;
    expect(await statusOf(s)).toBe(Status.PAUSED);
    await CALLS.kill(s);
    await CALLS.wait(s);
    await CALLS.delete(s);
    for (const call of Object.keys(CALLS) as TaskCall[]) {
      const e = await refusal(CALLS[call](s));
      // What the shim does not implement says so, container or not.
      const unimplemented = ["checkpoint"].includes(call);
      expect(e.code).toBe(unimplemented ? Code.UNIMPLEMENTED : Code.NOT_FOUND);
      if (!unimplemented) expect(e.message).toContain("c1");
    }
  });

  test("a call for an exec that was never added is NOT_FOUND", async () => {
    const s = setup();
    await inState(s, "running");
    const e = await refusal(s.service.state({ id: "c1", execId: "e1" }, ctxFor(NS)));
    expect(e.code).toBe(Code.NOT_FOUND);
    expect(e.message).toContain("exec e1");
  });
});

describe("events", () => {
  const decoded = (s: Setup) =>
    s.host.events.map((e) => {
      switch (e.topic) {
        case "/tasks/create":
          return { topic: e.topic, id: TaskCreate.decode(e.event.value).containerId };
        case "/tasks/start":
          return { topic: e.topic, id: TaskStart.decode(e.event.value).containerId };
        case "/tasks/exit":
          return { topic: e.topic, id: TaskExit.decode(e.event.value).containerId, status: TaskExit.decode(e.event.value).exitStatus };
        case "/tasks/delete":
          return { topic: e.topic, id: TaskDelete.decode(e.event.value).containerId, status: TaskDelete.decode(e.event.value).exitStatus };
        default:
          return { topic: e.topic };
      }
    });

  test("create, start, exit, delete, in that order, with the exit status", async () => {
    const s = setup();
    await inState(s, "running");
    s.host.exit(NS, "c1", 5);
    await CALLS.wait(s);
    const del = await s.service.delete({ id: "c1", execId: "" }, ctxFor(NS));
    expect(del.exitStatus).toBe(5);
    expect(decoded(s)).toEqual([
      { topic: "/tasks/create", id: "c1" },
      { topic: "/tasks/start", id: "c1" },
      { topic: "/tasks/exit", id: "c1", status: 5 },
      { topic: "/tasks/delete", id: "c1", status: 5 },
    ]);
  });

  test("an exit while Start is still under way is published after the start", async () => {
    const s = setup();
    await inState(s, "created");
    const gate = s.host.runtime(NS).gate("start");
    const starting = CALLS.start(s);
    await gate.reached;
    s.host.exit(NS, "c1", 0);
    await CALLS.wait(s); // the exit is known to the service now
    expect(s.host.topics(NS)).toEqual(["/tasks/create"]);
    gate.release();
    await starting;
    // A start that raced the exit does not revive the task.
    expect(await statusOf(s)).toBe(Status.STOPPED);
    await Promise.resolve();
    expect(s.host.topics(NS)).toEqual(["/tasks/create", "/tasks/start", "/tasks/exit"]);
  });

  test("a task deleted without a start: create, exit (137), delete", async () => {
    const s = setup();
    await inState(s, "created");
    const del = await s.service.delete({ id: "c1", execId: "" }, ctxFor(NS));
    expect(del.exitStatus).toBe(137);
    expect(decoded(s)).toEqual([
      { topic: "/tasks/create", id: "c1" },
      { topic: "/tasks/exit", id: "c1", status: 137 },
      { topic: "/tasks/delete", id: "c1", status: 137 },
    ]);
  });

  test("an init already gone when its exit is watched: /tasks/create still comes first", async () => {
    const s = setup();
    await s.service.create(createReq("warmup"), ctxFor(NS)); // the namespace's runtime exists now
    s.host.runtime(NS).diesOnCreate = 2;
    await s.service.create(createReq("c1"), ctxFor(NS));
    expect(await CALLS.wait(s)).toMatchObject({ exitStatus: 2 });
    expect(decoded(s).filter((e) => e.id === "c1")).toEqual([
      { topic: "/tasks/create", id: "c1" },
      { topic: "/tasks/exit", id: "c1", status: 2 },
    ]);
  });

  test("an OOM kill: /tasks/oom before /tasks/exit, and Wait answers once both are queued", async () => {
    const s = setup();
    await inState(s, "running");
    const { pid } = await s.service.state({ id: "c1", execId: "" }, ctxFor(NS));
    expect(s.host.oomWatched).toEqual([pid]); // the init's cgroup, watched from create on
    const waiting = CALLS.wait(s).then((w) => ({ w, topics: s.host.topics(NS) }));
    s.host.oomKill(NS, "c1");
    const { w, topics } = await waiting;
    expect(w).toMatchObject({ exitStatus: 137 });
    expect(topics).toEqual(["/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit"]);
    await CALLS.delete(s);
    expect(decoded(s)).toEqual([
      { topic: "/tasks/create", id: "c1" },
      { topic: "/tasks/start", id: "c1" },
      { topic: "/tasks/oom" },
      { topic: "/tasks/exit", id: "c1", status: 137 },
      { topic: "/tasks/delete", id: "c1", status: 137 },
    ]);
    expect(TaskOOM.decode(s.host.events[2]!.event.value).containerId).toBe("c1");
  });

  test("an OOM kill of another process while the init runs: /tasks/oom at once, none again at the exit; the watch ends", async () => {
    const s = setup();
    await inState(s, "running");
    s.host.oomKillChild(NS, "c1");
    await Promise.resolve(); // queued behind the container's /tasks/start (already out)
    expect(s.host.topics(NS)).toEqual(["/tasks/create", "/tasks/start", "/tasks/oom"]);
    expect(await statusOf(s)).toBe(Status.RUNNING);
    await s.service.kill({ id: "c1", execId: "", signal: 9, all: false }, ctxFor(NS));
    expect(await CALLS.wait(s)).toMatchObject({ exitStatus: 137 });
    await CALLS.delete(s);
    expect(s.host.topics(NS)).toEqual(["/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit", "/tasks/delete"]);
    expect(s.host.oomWatchClosed(NS, "c1")).toBe(true);
  });

  test("a kill that is not the OOM killer's (SIGKILL from Kill) publishes no /tasks/oom", async () => {
    const s = setup();
    await inState(s, "running");
    await s.service.kill({ id: "c1", execId: "", signal: 9, all: false }, ctxFor(NS));
    expect(await CALLS.wait(s)).toMatchObject({ exitStatus: 137 });
    await CALLS.delete(s);
    expect(s.host.topics(NS)).toEqual(["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
  });

  test("an OOM kill while Start is under way: start, oom, exit", async () => {
    const s = setup();
    await inState(s, "created");
    const gate = s.host.runtime(NS).gate("start");
    const starting = CALLS.start(s);
    await gate.reached;
    s.host.oomKill(NS, "c1");
    await Promise.resolve();
    expect(s.host.topics(NS)).toEqual(["/tasks/create"]);
    gate.release();
    await starting;
    expect(await CALLS.wait(s)).toMatchObject({ exitStatus: 137 });
    expect(s.host.topics(NS)).toEqual(["/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit"]);
  });

  test("pause and resume are published", async () => {
    const s = setup();
    await inState(s, "paused");
    await CALLS.resume(s);
    expect(s.host.topics(NS)).toEqual(["/tasks/create", "/tasks/start", "/tasks/paused", "/tasks/resumed"]);
  });
});

describe("calls side by side", () => {
  test("two Deletes: one runs, both get its answer, one /tasks/delete", async () => {
    const s = setup();
    await inState(s, "stopped");
    const gate = s.host.runtime(NS).gate("delete");
    const first = CALLS.delete(s);
    await gate.reached;
    const second = CALLS.delete(s);
    gate.release();
    const [a, b] = await Promise.all([first, second]);
    expect(a).toEqual(b as typeof a);
    expect(s.host.runtime(NS).calls.filter((c) => c.startsWith("delete"))).toEqual(["delete c1 force"]);
    expect(s.host.topics(NS).filter((t) => t === "/tasks/delete")).toHaveLength(1);
  });

  test("a Wait under way is answered by the Delete of a never-started task", async () => {
    const s = setup();
    await inState(s, "created");
    const waiting = CALLS.wait(s);
    await CALLS.delete(s);
    expect(await waiting).toMatchObject({ exitStatus: 137 });
  });

  test("Kill during a Delete of a stopped task: process already finished", async () => {
    const s = setup();
    await inState(s, "stopped");
    const gate = s.host.runtime(NS).gate("delete");
    const deleting = CALLS.delete(s);
    await gate.reached;
    const e = await refusal(CALLS.kill(s));
    expect(e.code).toBe(Code.NOT_FOUND);
    expect(e.message).toContain("process already finished");
    gate.release();
    await deleting;
  });

  test("a Kill under way when its exit is already out: the Delete after that exit answers only after the Kill", async () => {
    // CRI's StopPodSandbox on containerd 1.6: its Kill of the pause container is still in the
    // runtime when the init dies of it; the exit monitor, told by Wait, kills --all and
    // deletes, and containerd closes its connection once that Delete (and the Shutdown after
    // it) is answered: a Kill not answered by then fails with "ttrpc: closed".
    const s = setup();
    await inState(s, "running");
    const gate = s.host.runtime(NS).gate("kill");
    const order: string[] = [];
    const killing = s.service.kill({ id: "c1", execId: "", signal: 9, all: false }, ctxFor(NS));
    void killing.then(() => order.push("kill"));
    await gate.reached;
    s.host.exit(NS, "c1", 137);
    expect(await CALLS.wait(s)).toMatchObject({ exitStatus: 137 });
    await s.service.kill({ id: "c1", execId: "", signal: 9, all: true }, ctxFor(NS));
    const deleting = CALLS.delete(s);
    void deleting.then(() => order.push("delete"));
    // Every step of the Delete is in memory here: a turn of the event loop would finish it.
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual([]);
    gate.release();
    expect(await deleting).toMatchObject({ exitStatus: 137 });
    expect(order).toEqual(["kill", "delete"]);
  });

  test("Start during the Delete of a created task is refused: a delete is under way", async () => {
    const s = setup();
    await inState(s, "created");
    const gate = s.host.runtime(NS).gate("delete");
    const deleting = CALLS.delete(s);
    await gate.reached;
    const e = await refusal(CALLS.start(s));
    expect(e.code).toBe(Code.FAILED_PRECONDITION);
    expect(e.message).toContain("a delete is under way");
    gate.release();
    await deleting;
    expect(s.host.runtime(NS).calls).not.toContain("start c1");
  });

  test("Delete of a running task is refused until a Kill's exit; Waits all get the exit", async () => {
    const s = setup();
    await inState(s, "running");
    const waits = [CALLS.wait(s), CALLS.wait(s)];
    const refused = await refusal(CALLS.delete(s));
    expect(refused.code).toBe(Code.FAILED_PRECONDITION);
    expect(refused.message).toContain("task is running");
    await Promise.all([CALLS.kill(s), CALLS.kill(s)]);
    for (const w of await Promise.all(waits)) expect(w).toMatchObject({ exitStatus: 143 });
    expect(await CALLS.delete(s)).toMatchObject({ exitStatus: 143 });
  });

  test("a runtime call held up in one namespace does not hold up another's calls", async () => {
    const s = setup();
    const a = ctxFor("pod-a");
    const b = ctxFor("pod-b");
    await s.service.create(createReq("c1"), a);
    await s.service.create(createReq("c1"), b);
    const gate = s.host.runtime("pod-a").gate("start");
    const slow = s.service.start({ id: "c1", execId: "" }, a);
    await gate.reached;
    // Pod b's whole life runs while pod a's Start is still in the runtime.
    await s.service.start({ id: "c1", execId: "" }, b);
    await s.service.kill({ id: "c1", execId: "", signal: 9, all: false }, b);
    expect(await s.service.wait({ id: "c1", execId: "" }, b)).toMatchObject({ exitStatus: 137 });
    await s.service.delete({ id: "c1", execId: "" }, b);
    expect((await s.service.state({ id: "c1", execId: "" }, a)).status).toBe(Status.CREATED);
    gate.release();
    await slow;
    expect((await s.service.state({ id: "c1", execId: "" }, a)).status).toBe(Status.RUNNING);
  });

  test("two Starts at once: one runs the runtime's start, the other is refused", async () => {
    const s = setup();
    await inState(s, "created");
    const gate = s.host.runtime(NS).gate("start");
    const first = CALLS.start(s);
    await gate.reached;
    const e = await refusal(CALLS.start(s));
    expect(e.code).toBe(Code.FAILED_PRECONDITION);
    expect(e.message).toContain("a start is under way");
    // An exit now is still held back until the first Start's event is out.
    s.host.exit(NS, "c1", 0);
    await CALLS.wait(s);
    expect(s.host.topics(NS)).toEqual(["/tasks/create"]);
    gate.release();
    await first;
    await Promise.resolve();
    expect(s.host.topics(NS)).toEqual(["/tasks/create", "/tasks/start", "/tasks/exit"]);
    expect(s.host.runtime(NS).calls.filter((c) => c.startsWith("start"))).toEqual(["start c1"]);
  });

  test("a second Create of an id whose Create is under way is ALREADY_EXISTS", async () => {
    const s = setup();
    const ns = ctxFor(NS);
    const created = s.service.create(createReq("c1"), ns);
    // The runtime of a namespace exists once the first call for it has begun.
    const gate = s.host.runtime(NS).gate("create");
    const e = await refusal(s.service.create(createReq("c1"), ns));
    expect(e.code).toBe(Code.ALREADY_EXISTS);
    await gate.reached;
    gate.release();
    await created;
  });
});

describe("namespaces", () => {
  test("the same id in two namespaces: two containers, kept apart", async () => {
    const s = setup();
    const a = ctxFor("ns-a");
    const b = ctxFor("ns-b");
    const ca = await s.service.create(createReq("web", { bundle: "/bundles/a" }), a);
    const cb = await s.service.create(createReq("web", { bundle: "/bundles/b" }), b);
    expect(ca.pid).not.toBe(cb.pid);
    expect(s.host.namespacesAsked).toEqual(["ns-a", "ns-b"]);
    expect((await s.service.state({ id: "web", execId: "" }, a)).bundle).toBe("/bundles/a");
    expect((await s.service.state({ id: "web", execId: "" }, b)).bundle).toBe("/bundles/b");
    // Each namespace's runtime root and state dir: their own.
    expect(existsSync(join(s.host.root, "ns-a", "web"))).toBe(true);
    expect(existsSync(join(s.host.root, "ns-b", "web"))).toBe(true);

    await s.service.start({ id: "web", execId: "" }, a);
    expect((await s.service.state({ id: "web", execId: "" }, b)).status).toBe(Status.CREATED);
    await s.service.kill({ id: "web", execId: "", signal: 9, all: false }, a);
    await s.service.wait({ id: "web", execId: "" }, a);
    await s.service.delete({ id: "web", execId: "" }, a);
    expect(s.host.runtime("ns-a").calls).toEqual(["create web", "start web", "kill web 9", "delete web force"]);
    expect(s.host.runtime("ns-b").calls).toEqual(["create web"]);
    // b's container is untouched and its events are b's alone.
    expect((await s.service.state({ id: "web", execId: "" }, b)).status).toBe(Status.CREATED);
    expect(s.host.topics("ns-a")).toEqual(["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
    expect(s.host.topics("ns-b")).toEqual(["/tasks/create"]);
    expect(existsSync(join(s.host.root, "ns-a", "web"))).toBe(false);
    expect(existsSync(join(s.host.root, "ns-b", "web"))).toBe(true);
  });

  test("the namespace comes from containerd's metadata, else from the -namespace flag", async () => {
    const s = setup({ defaultNamespace: "flag-ns" });
    await s.service.create(createReq("c1"), ctxFor()); // no metadata
    await s.service.create(createReq("c1"), ctxFor("k8s.io"));
    await s.service.create(createReq("c2")); // no context at all
    expect(s.host.namespacesAsked).toEqual(["flag-ns", "k8s.io"]);
    expect(s.host.runtime("flag-ns").calls).toEqual(["create c1", "create c2"]);
    expect(s.host.runtime("k8s.io").calls).toEqual(["create c1"]);
    const e = await refusal(s.service.state({ id: "c2", execId: "" }, ctxFor("k8s.io")));
    expect(e.code).toBe(Code.NOT_FOUND);
    expect(e.message).toContain("namespace k8s.io");
  });

  test("namespaceOf reads the first value of containerd-namespace-ttrpc", () => {
    expect(NAMESPACE_METADATA_KEY).toBe("containerd-namespace-ttrpc");
    expect(namespaceOf(ctxFor(["one", "two"]), "f")).toBe("one");
    expect(namespaceOf(ctxFor([""]), "f")).toBe("f");
    expect(namespaceOf(undefined, "f")).toBe("f");
  });

  test("a namespace that could name another directory is refused", async () => {
    const s = setup();
    const e = await refusal(s.service.create(createReq("c1"), ctxFor("../etc")));
    expect(e.code).toBe(Code.INVALID_ARGUMENT);
    expect(s.host.namespacesAsked).toEqual([]);
  });
});

describe("cleanup failures are said, not swallowed", () => {
  test("a Delete that cannot unmount fails with the reason, logs it, and can be retried", async () => {
    const s = setup();
    await inState(s, "stopped");
    s.host.unmountError = new Error("umount: device is busy");
    const e = await refusal(CALLS.delete(s));
    expect(e.code).toBe(Code.UNKNOWN);
    expect(e.message).toContain("could not clean up");
    expect(e.message).toContain("device is busy");
    expect(s.host.logs.some((l) => l.level === "error" && l.msg.includes("device is busy"))).toBe(true);
    // Still there, still stopped; no /tasks/delete yet.
    expect(await statusOf(s)).toBe(Status.STOPPED);
    expect(s.host.topics(NS)).not.toContain("/tasks/delete");
    s.host.unmountError = null;
    expect(await CALLS.delete(s)).toMatchObject({ exitStatus: 3 });
    expect(s.host.mounted.size).toBe(0);
    expect(s.host.topics(NS).filter((t) => t === "/tasks/delete")).toHaveLength(1);
  });

  test("deleteFinal (the daemon's `shim delete`): a cleanup failure is logged and returned with the exit, and the container goes", async () => {
    const s = setup();
    await inState(s, "stopped");
    s.host.unmountError = new Error("umount: device is busy");
    const r = await s.service.deleteFinal({ id: "c1", execId: "" }, ctxFor(NS));
    expect(r).toMatchObject({ exitStatus: 3 });
    expect(r.failed).toEqual([`unmount /bundles/c1/rootfs: umount: device is busy`]);
    expect(s.host.logs.some((l) => l.level === "error" && l.msg.includes("device is busy"))).toBe(true);
    // containerd forgets the task after `shim delete`: so does the service, and says so.
    expect((await refusal(CALLS.state(s))).code).toBe(Code.NOT_FOUND);
    expect(s.host.topics(NS).filter((t) => t === "/tasks/delete")).toHaveLength(1);
  });

  test("a failed Create undoes what it did and logs what it could not undo", async () => {
    const s = setup();
    s.host.prepareError = new Error("config.json: not valid JSON");
    s.host.unmountError = new Error("umount: stuck");
    const e = await refusal(s.service.create(createReq("c1"), ctxFor(NS)));
    expect(e.message).toContain("config.json: not valid JSON");
    expect(s.host.logs.some((l) => l.level === "error" && l.msg.includes("umount: stuck"))).toBe(true);
    expect(existsSync(join(s.host.root, NS, "c1"))).toBe(false);
    expect((await refusal(CALLS.state(s))).code).toBe(Code.NOT_FOUND);
    // Nothing of it stays: the id can be created again.
    s.host.prepareError = null;
    s.host.unmountError = null;
    await s.service.create(createReq("c1"), ctxFor(NS));
  });

  test("a runtime create failure removes the runtime's state for the id", async () => {
    const s = setup();
    await s.service.create(createReq("other"), ctxFor(NS)); // the namespace's runtime exists now
    s.host.runtime(NS).failing.set("create", new Error("runc create: exec format error"));
    const e = await refusal(s.service.create(createReq("c1"), ctxFor(NS)));
    expect(e.code).toBe(Code.UNKNOWN);
    expect(e.message).toBe("create: runc create: exec format error");
    expect(s.host.runtime(NS).calls).toEqual(["create other", "create c1", "delete c1 force"]);
  });

  test("a failed Create whose runtime delete fails too keeps its work dir for `shim delete` (it names the runtime to retry)", async () => {
    const s = setup();
    await s.service.create(createReq("other"), ctxFor(NS)); // the namespace's runtime exists now
    s.host.runtime(NS).failing.set("create", new Error("runc create: exec format error"));
    s.host.runtime(NS).failing.set("delete", new Error("runc delete: device or resource busy"));
    const e = await refusal(s.service.create(createReq("c1"), ctxFor(NS)));
    expect(e.message).toBe("create: runc create: exec format error");
    const workDir = join(s.host.root, NS, "c1");
    // Kept: the runtime may still hold c1, and a `shim delete` must find the runtime (its
    // options file lives here) to retry, then removes the dir itself.
    expect(existsSync(workDir)).toBe(true);
    const said = s.host.logs.filter((l) => l.level === "error").map((l) => l.msg);
    expect(said.some((m) => m.includes("runtime delete: runc delete: device or resource busy"))).toBe(true);
    expect(said.some((m) => m.includes(`remove ${workDir}: kept until the runtime has deleted the container`))).toBe(true);
    // Everything else is undone as before: the rootfs is unmounted.
    expect(s.host.mounted.has("/bundles/c1")).toBe(false);
  });

  test("a failed Create answers only once the compile cache's work for it is done (no write left running)", async () => {
    const s = setup();
    await s.service.create(createReq("other"), ctxFor(NS));
    s.host.runtime(NS).failing.set("create", new Error("runc create: exec format error"));
    const order: string[] = [];
    let finish!: () => void;
    const warming = Promise.withResolvers<void>();
    s.host.warm = () =>
      new Promise<void>((r) => {
        finish = () => {
          order.push("warm done");
          r();
        };
        warming.resolve();
      });
    const created = refusal(s.service.create(createReq("c1"), ctxFor(NS))).then((e) => order.push(`answered: ${e.message}`));
    // The cache's work has begun; the runtime's create has failed by now or will fail while it runs.
    await warming.promise;
    for (let i = 0; i < 20; i++) await Bun.sleep(0);
    // Without the wait, the answer (and then containerd's Shutdown, exiting the server) could
    // come while the artifact is being written, leaving its tmp file in the cache.
    expect(order).toEqual([]);
    finish();
    await created;
    expect(order).toEqual(["warm done", "answered: create: runc create: exec format error"]);
  });
});

describe("the service's own calls", () => {
  test("Connect reports the shim pid it was given and the task's pid", async () => {
    const s = setup();
    const { pid } = await s.service.create(createReq("c1"), ctxFor(NS));
    expect(await s.service.connect({ id: "c1" }, ctxFor(NS))).toMatchObject({ shimPid: 4242, taskPid: pid });
    expect(await s.service.connect({ id: "c1" }, ctxFor("elsewhere"))).toMatchObject({ shimPid: 4242, taskPid: 0 });
  });

  test("Shutdown with containers left keeps serving, even with now; with none it asks the host to stop", async () => {
    const s = setup();
    await inState(s, "stopped");
    await s.service.shutdown({ id: "c1", now: false });
    expect(s.service.shuttingDown).toBe(false);
    // `now` does not end a shim that still has containers (runc-v2 ignores it too).
    await s.service.shutdown({ id: "c1", now: true });
    expect(s.service.shuttingDown).toBe(false);
    await CALLS.delete(s);
    await s.service.shutdown({ id: "c1", now: false });
    expect(s.service.shuttingDown).toBe(true);
    await s.shutdown; // the host is told
    const e = await refusal(s.service.create(createReq("c2"), ctxFor(NS)));
    expect(e.code).toBe(Code.UNAVAILABLE);
  });

  test("Update hands the runtime the LinuxResources in created, running and paused; refuses it once stopped", async () => {
    const resources = { memory: { limit: 256 << 20 }, cpu: { shares: 512, quota: 50000, period: 100000 } };
    for (const state of ["created", "running", "paused"] as const) {
      const s = setup();
      await inState(s, state);
      await s.service.update(updateReq("c1", resources), ctxFor(NS));
      expect(s.host.runtime(NS).updates).toEqual([{ id: "c1", resources }]);
      expect(await statusOf(s)).toBe(STATUS[state]);
    }
    const s = setup();
    await inState(s, "stopped");
    const e = await refusal(s.service.update(updateReq("c1", resources), ctxFor(NS)));
    expect(e.code).toBe(Code.FAILED_PRECONDITION);
    expect(e.message).toContain("task is stopped");
    expect(s.host.runtime(NS).updates).toEqual([]);
  });

  test("Update refuses resources that are not LinuxResources JSON, without calling the runtime", async () => {
    const s = setup();
    await inState(s, "running");
    const bad = [
      UpdateTaskRequest.fromPartial({ id: "c1" }),
      updateReq("c1", { memory: {} }, "types.containerd.io/something/Else"),
      UpdateTaskRequest.fromPartial({ id: "c1", resources: { typeUrl: LINUX_RESOURCES, value: new TextEncoder().encode("{not json") } }),
      updateReq("c1", [1, 2]),
    ];
    for (const req of bad) expect((await refusal(s.service.update(req, ctxFor(NS)))).code).toBe(Code.INVALID_ARGUMENT);
    expect(s.host.runtime(NS).calls.filter((c) => c.startsWith("update"))).toEqual([]);
  });

  test("Update of a runtime failure is the runtime's words", async () => {
    const s = setup();
    await inState(s, "running");
    s.host.runtime(NS).failing.set("update", new RuncError("runc update", 1, "invalid memory limit"));
    const e = await refusal(s.service.update(updateReq("c1", { memory: { limit: 1 } }), ctxFor(NS)));
    expect(e.code).toBe(Code.UNKNOWN);
    expect(e.message).toBe("update: runc update: invalid memory limit");
  });

  test("runtime options of a Create (runc's Options) pick the runtime every call of that container uses", async () => {
    const s = setup();
    const options = {
      typeUrl: "containerd.runc.v1.Options",
      value: RuncOptions.encode(RuncOptions.fromPartial({ binaryName: "/opt/wrap-runc", root: "/run/alt", systemdCgroup: true })).finish(),
    };
    await s.service.create(createReq("c1", { options }), ctxFor(NS));
    await s.service.create(createReq("c2"), ctxFor(NS));
    expect(s.host.optionRuntimes.map((r) => r.options)).toEqual([{ binaryName: "/opt/wrap-runc", root: "/run/alt", systemdCgroup: true }]);
    const alt = s.host.optionRuntimes[0]!.runtime;
    await CALLS.start(s);
    await CALLS.kill(s);
    await CALLS.wait(s);
    await CALLS.delete(s);
    expect(alt.calls).toEqual(["create c1", "start c1", "kill c1 15", "delete c1 force"]);
    expect(s.host.runtime(NS).calls).toEqual(["create c2"]);
  });

  test("runtime options are kept in the container's work directory for `shim delete`, and go with it", async () => {
    const s = setup();
    const options = {
      typeUrl: "containerd.runc.v1.Options",
      value: RuncOptions.encode(RuncOptions.fromPartial({ binaryName: "/opt/wrap-runc", root: "/run/alt" })).finish(),
    };
    await s.service.create(createReq("c1", { options }), ctxFor(NS));
    await s.service.create(createReq("c2"), ctxFor(NS));
    const workDir = (id: string) => join(s.host.root, NS, id);
    expect(await loadRuntimeOptions(workDir("c1"))).toEqual({ binaryName: "/opt/wrap-runc", root: "/run/alt" });
    expect(existsSync(join(workDir("c2"), RUNTIME_OPTIONS_FILE))).toBe(false);
    await CALLS.delete(s);
    expect(existsSync(workDir("c1"))).toBe(false);
  });

  test("runtime options as CRI sends them for other runtime types: TOML in config_body or in config_path's file", async () => {
    const s = setup();
    const body = {
      typeUrl: "runtimeoptions.v1.Options",
      value: CriRuntimeOptions.encode(
        CriRuntimeOptions.fromPartial({ configBody: new TextEncoder().encode('BinaryName = "crun"\nOther = 1\n') }),
      ).finish(),
    };
    await s.service.create(createReq("c1", { options: body }), ctxFor(NS));
    const file = join(s.host.root, "opts.toml");
    writeFileSync(file, 'Root = "/run/r"\nSystemdCgroup = false\n');
    const path = {
      typeUrl: "runtimeoptions.v1.Options",
      value: CriRuntimeOptions.encode(CriRuntimeOptions.fromPartial({ configPath: file })).finish(),
    };
    await s.service.create(createReq("c2", { options: path }), ctxFor(NS));
    // An empty table is no options at all: the namespace's runtime.
    const empty = { typeUrl: "runtimeoptions.v1.Options", value: CriRuntimeOptions.encode(CriRuntimeOptions.fromPartial({})).finish() };
    await s.service.create(createReq("c3", { options: empty }), ctxFor(NS));
    expect(s.host.optionRuntimes.map((r) => r.options)).toEqual([{ binaryName: "crun" }, { root: "/run/r" }]);
    expect(s.host.runtime(NS).calls).toEqual(["create c3"]);
    const bad = {
      typeUrl: "runtimeoptions.v1.Options",
      value: CriRuntimeOptions.encode(CriRuntimeOptions.fromPartial({ configBody: new TextEncoder().encode("BinaryName = 3") })).finish(),
    };
    const e = await refusal(s.service.create(createReq("c4", { options: bad }), ctxFor(NS)));
    expect(e.code).toBe(Code.INVALID_ARGUMENT);
    expect(e.message).toContain("BinaryName must be a string");
    const missing = {
      typeUrl: "runtimeoptions.v1.Options",
      value: CriRuntimeOptions.encode(CriRuntimeOptions.fromPartial({ configPath: join(s.host.root, "nope.toml") })).finish(),
    };
    expect((await refusal(s.service.create(createReq("c5", { options: missing }), ctxFor(NS)))).code).toBe(Code.INVALID_ARGUMENT);
  });

  test("Stats goes through the host's metrics; Pids lists the runtime's", async () => {
    const s = setup();
    const { pid } = await s.service.create(createReq("c1"), ctxFor(NS));
    const stats = await CALLS.stats(s);
    expect((stats as { stats: { typeUrl: string } }).stats.typeUrl).toBe("fake.Metrics");
    expect(await CALLS.pids(s)).toEqual({ processes: [{ pid, info: undefined }] });
  });

  test("ids that are not containerd identifiers are refused", async () => {
    const s = setup();
    for (const id of ["", "../x", "a/b", "-a", "x".repeat(77)]) {
      expect((await refusal(s.service.create(createReq(id), ctxFor(NS)))).code).toBe(Code.INVALID_ARGUMENT);
    }
  });
});
