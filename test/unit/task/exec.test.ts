// Exec processes through the Task service with a fake host (no root, no runc, no containerd):
// every exec call in every exec state against the exec table, Exec in every task state, the
// events and their order, duplicate and invalid ids, and an init exit with execs running.
import { afterEach, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { TaskExecAdded, TaskExecStarted, TaskExit } from "../../../src/task/gen/containerd/events/task.ts";
import { CreateTaskRequest, ExecProcessRequest } from "../../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Status } from "../../../src/task/gen/containerd/types/task/task.ts";
import { EXEC_TABLE, type ExecCall, type ExecState, TASK_TABLE } from "../../../src/task/state.ts";
import { TaskService } from "../../../src/task/task-service.ts";
import { Code, TtrpcError } from "../../../src/ttrpc/index.ts";
import { ctxFor, FakeHost } from "./fake-host.ts";

const NS = "default";
const ctx = ctxFor(NS);
let hosts: FakeHost[] = [];

afterEach(() => {
  for (const h of hosts) rmSync(h.root, { recursive: true, force: true });
  hosts = [];
});

function setup() {
  const host = new FakeHost();
  hosts.push(host);
  const service = new TaskService({ host, defaultNamespace: NS, shimPid: 4242, onShutdown: () => {} });
  return { host, service };
}
type Setup = ReturnType<typeof setup>;

const execReq = (execId: string, args: string[] = ["/bin/sh", "-c", "true"], extra: Partial<ExecProcessRequest> = {}) =>
  ExecProcessRequest.fromPartial({
    id: "c1",
    execId,
    spec: {
      typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process",
      value: new TextEncoder().encode(JSON.stringify({ args, cwd: "/", env: ["PATH=/bin"] })),
    },
    ...extra,
  });

async function refusal(p: Promise<unknown>): Promise<TtrpcError> {
  const e = await p.then(
    () => new Error("expected the call to be refused, it succeeded"),
    (err: unknown) => err,
  );
  if (!(e instanceof TtrpcError)) throw e;
  return e;
}

/** Container c1, running. */
async function running(s: Setup): Promise<void> {
  await s.service.create(CreateTaskRequest.fromPartial({ id: "c1", bundle: "/bundles/c1", rootfs: [] }), ctx);
  await s.service.start({ id: "c1", execId: "" }, ctx);
}

/** Exec e1 of running container c1 brought to `state`. */
async function execIn(s: Setup, state: Exclude<ExecState, "deleted">): Promise<void> {
  await running(s);
  await s.service.exec(execReq("e1"), ctx);
  if (state === "created") return;
  await s.service.start({ id: "c1", execId: "e1" }, ctx);
  if (state === "stopped") {
    s.host.exitExec(NS, "c1", "e1", 4);
    await s.service.wait({ id: "c1", execId: "e1" }, ctx);
  }
}

const execStatus = async (s: Setup) => (await s.service.state({ id: "c1", execId: "e1" }, ctx)).status;

const EXEC_CALLS: Record<ExecCall, (s: Setup) => Promise<unknown>> = {
  start: (s) => s.service.start({ id: "c1", execId: "e1" }, ctx),
  kill: (s) => s.service.kill({ id: "c1", execId: "e1", signal: 15, all: false }, ctx),
  delete: (s) => s.service.delete({ id: "c1", execId: "e1" }, ctx),
  wait: (s) => s.service.wait({ id: "c1", execId: "e1" }, ctx),
  state: (s) => s.service.state({ id: "c1", execId: "e1" }, ctx),
  closeIO: (s) => s.service.closeIO({ id: "c1", execId: "e1", stdin: true }, ctx),
  resizePty: (s) => s.service.resizePty({ id: "c1", execId: "e1", width: 100, height: 40 }, ctx),
};

const STATUS: Record<Exclude<ExecState, "deleted">, Status> = {
  created: Status.CREATED,
  running: Status.RUNNING,
  stopped: Status.STOPPED,
};

describe("every exec call in every exec state follows the exec table", () => {
  for (const state of ["created", "running", "stopped"] as const) {
    for (const call of Object.keys(EXEC_CALLS) as ExecCall[]) {
      const rule = EXEC_TABLE[state][call];
      const what = rule.allow ? `allowed${rule.to ? `, → ${rule.to}` : ""}` : `refused with ${rule.code}`;
      test(`${state}: ${call} is ${what}`, async () => {
        const s = setup();
        await execIn(s, state);
        if (!rule.allow) {
          const e = await refusal(EXEC_CALLS[call](s));
          expect(e.code).toBe(rule.code);
          expect(e.message).toContain(`process is ${state}`);
          expect(await execStatus(s)).toBe(STATUS[state]); // a refused call changes nothing
          return;
        }
        if (call === "wait" && state !== "stopped") {
          const waiting = EXEC_CALLS.wait(s);
          if (state === "created") await EXEC_CALLS.start(s);
          s.host.exitExec(NS, "c1", "e1", 6);
          expect(await waiting).toMatchObject({ exitStatus: 6 });
          return;
        }
        await EXEC_CALLS[call](s);
        if (rule.to === "deleted") {
          expect((await refusal(EXEC_CALLS.state(s))).code).toBe(Code.NOT_FOUND);
        } else if (call === "kill") {
          // A kill changes nothing itself; the exit it causes does.
          expect(await EXEC_CALLS.wait(s)).toMatchObject({ exitStatus: 143 });
          expect(await execStatus(s)).toBe(Status.STOPPED);
        } else {
          expect(await execStatus(s)).toBe(STATUS[(rule.to ?? state) as Exclude<ExecState, "deleted">]);
        }
        // The task itself is untouched by its exec's calls.
        expect((await s.service.state({ id: "c1", execId: "" }, ctx)).status).toBe(Status.RUNNING);
      });
    }
  }

  test("the cells containerd relies on", () => {
    const cell = (s: ExecState, c: ExecCall) => {
      const r = EXEC_TABLE[s][c];
      return r.allow ? (r.to ?? s) : r.code;
    };
    expect(cell("created", "start")).toBe("running");
    expect(cell("created", "kill")).toBe(Code.FAILED_PRECONDITION);
    expect(cell("running", "delete")).toBe(Code.FAILED_PRECONDITION);
    expect(cell("stopped", "kill")).toBe(Code.NOT_FOUND);
    expect(cell("stopped", "delete")).toBe("deleted");
    expect(cell("deleted", "delete")).toBe(Code.NOT_FOUND);
    expect(TASK_TABLE.running.exec).toEqual({ allow: true });
    expect(TASK_TABLE.stopped.exec).toMatchObject({ allow: false, code: Code.FAILED_PRECONDITION });
    expect(TASK_TABLE.paused.exec).toMatchObject({ allow: false, code: Code.FAILED_PRECONDITION });
  });
});

describe("Exec and its task", () => {
  test("Exec on a stopped container is refused; nothing is prepared", async () => {
    const s = setup();
    await running(s);
    s.host.exit(NS, "c1", 0);
    await s.service.wait({ id: "c1", execId: "" }, ctx);
    const e = await refusal(s.service.exec(execReq("e1"), ctx));
    expect(e.code).toBe(Code.FAILED_PRECONDITION);
    expect(e.message).toContain("task is stopped");
    expect(s.host.execsPrepared).toHaveLength(0);
    expect((await refusal(EXEC_CALLS.state(s))).code).toBe(Code.NOT_FOUND);
  });

  test("Exec on a paused container is refused; an exec added before cannot start while paused", async () => {
    const s = setup();
    await running(s);
    await s.service.exec(execReq("e1"), ctx);
    await s.service.pause({ id: "c1" }, ctx);
    expect((await refusal(s.service.exec(execReq("e2"), ctx))).code).toBe(Code.FAILED_PRECONDITION);
    expect(await execStatus(s)).toBe(Status.PAUSED); // as runc-v2: an exec shows its container's pause
    const e = await refusal(EXEC_CALLS.start(s));
    expect(e.code).toBe(Code.FAILED_PRECONDITION);
    expect(e.message).toContain("paused");
    await s.service.resume({ id: "c1" }, ctx);
    await EXEC_CALLS.start(s);
    expect(await execStatus(s)).toBe(Status.RUNNING);
  });

  test("an exec added to a created container starts once it runs", async () => {
    const s = setup();
    await s.service.create(CreateTaskRequest.fromPartial({ id: "c1", bundle: "/bundles/c1", rootfs: [] }), ctx);
    await s.service.exec(execReq("e1"), ctx);
    await s.service.start({ id: "c1", execId: "" }, ctx);
    const { pid } = await EXEC_CALLS.start(s).then((r) => r as { pid: number });
    expect(pid).toBeGreaterThan(0);
    expect(s.host.runtime(NS).calls).toEqual(["create c1", "start c1", "exec c1 e1"]);
  });

  test("Start of an exec once the init has exited is refused (the init is not running)", async () => {
    const s = setup();
    await execIn(s, "created");
    s.host.exit(NS, "c1", 0);
    await s.service.wait({ id: "c1", execId: "" }, ctx);
    const e = await refusal(EXEC_CALLS.start(s));
    expect(e.code).toBe(Code.FAILED_PRECONDITION);
    expect(e.message).toContain("init process is not running");
    expect(s.host.runtime(NS).calls).not.toContain("exec c1 e1");
    // The created exec is deleted without a runtime call, then the task.
    expect(await EXEC_CALLS.delete(s)).toMatchObject({ exitStatus: 0, exitedAt: undefined });
    await s.service.delete({ id: "c1", execId: "" }, ctx);
  });

  test("a Wait on an exec deleted before it ever ran is answered (255)", async () => {
    const s = setup();
    await execIn(s, "created");
    const waiting = EXEC_CALLS.wait(s);
    expect(await EXEC_CALLS.delete(s)).toMatchObject({ pid: 0, exitStatus: 0, exitedAt: undefined });
    expect(await waiting).toMatchObject({ exitStatus: 255 });
  });

  test("the exec's process goes to the container's instance as given, with the request's terminal flag", async () => {
    const s = setup();
    await running(s);
    // Never started here: the fifo paths are only reported back.
    await s.service.exec(execReq("e1", ["/app.wasm", "echo", "hi"], { terminal: true, stdin: "/fifo/in", stdout: "/fifo/out" }), ctx);
    expect(s.host.execsPrepared).toEqual([
      {
        id: "c1",
        execId: "e1",
        process: { args: ["/app.wasm", "echo", "hi"], cwd: "/", env: ["PATH=/bin"], terminal: true },
      },
    ]);
    const st = await EXEC_CALLS.state(s);
    expect(st).toMatchObject({
      id: "e1",
      execId: "e1",
      bundle: "/bundles/c1",
      stdin: "/fifo/in",
      stdout: "/fifo/out",
      terminal: true,
      pid: 0,
    });
  });
});

describe("exec ids and specs", () => {
  test("a second Exec of an id is ALREADY_EXISTS, also while the first is being prepared", async () => {
    const s = setup();
    await running(s);
    const first = s.service.exec(execReq("e1"), ctx);
    const e = await refusal(s.service.exec(execReq("e1"), ctx));
    expect(e.code).toBe(Code.ALREADY_EXISTS);
    await first;
    expect((await refusal(s.service.exec(execReq("e1"), ctx))).code).toBe(Code.ALREADY_EXISTS);
    // Still one /tasks/exec-added, and the same id in another container is fine.
    expect(s.host.topics(NS).filter((t) => t === "/tasks/exec-added")).toHaveLength(1);
  });

  test("an exec id is free again once its exec is deleted", async () => {
    const s = setup();
    await execIn(s, "stopped");
    await EXEC_CALLS.delete(s);
    await s.service.exec(execReq("e1"), ctx);
    expect(await execStatus(s)).toBe(Status.CREATED);
  });

  test("exec ids that are not containerd identifiers are refused", async () => {
    const s = setup();
    await running(s);
    for (const id of ["", "../x", "a/b", "-a", "x".repeat(77)]) {
      expect((await refusal(s.service.exec(execReq(id), ctx))).code).toBe(Code.INVALID_ARGUMENT);
    }
    expect(s.host.execsPrepared).toHaveLength(0);
  });

  test("a process spec that is not JSON or has no args is INVALID_ARGUMENT", async () => {
    const s = setup();
    await running(s);
    const bad = (value: string) => execReq("e1", [], { spec: { typeUrl: "x", value: new TextEncoder().encode(value) } });
    for (const v of ["{", "null", "{}", '{"args":[]}', '{"args":[1]}']) {
      expect((await refusal(s.service.exec(bad(v), ctx))).code).toBe(Code.INVALID_ARGUMENT);
    }
  });

  test("a failed preparation leaves no exec behind and says why", async () => {
    const s = setup();
    await running(s);
    s.host.prepareExecError = new Error("/nope.wasm: no such file in the container's rootfs");
    const e = await refusal(s.service.exec(execReq("e1", ["/nope.wasm"]), ctx));
    expect(e.message).toContain("no such file");
    expect((await refusal(EXEC_CALLS.state(s))).code).toBe(Code.NOT_FOUND);
    expect(s.host.topics(NS)).not.toContain("/tasks/exec-added");
    s.host.prepareExecError = null;
    await s.service.exec(execReq("e1"), ctx);
  });

  test("a runtime exec failure: Start fails, the exec is stopped (255), Wait answers, Delete removes it", async () => {
    const s = setup();
    await execIn(s, "created");
    s.host.runtime(NS).failing.set("exec", new Error("runc exec: executable file not found"));
    const e = await refusal(EXEC_CALLS.start(s));
    expect(e.message).toContain("executable file not found");
    expect(await EXEC_CALLS.wait(s)).toMatchObject({ exitStatus: 255 });
    expect(await execStatus(s)).toBe(Status.STOPPED);
    // Never started: no exec-started, and no exit event either (as runc-v2).
    expect(s.host.topics(NS)).toEqual(["/tasks/create", "/tasks/start", "/tasks/exec-added"]);
    await EXEC_CALLS.delete(s);
  });
});

describe("exec events", () => {
  const decoded = (s: Setup) =>
    s.host.events.map((e) => {
      switch (e.topic) {
        case "/tasks/exec-added":
          return { topic: e.topic, ...TaskExecAdded.decode(e.event.value) };
        case "/tasks/exec-started":
          return { topic: e.topic, ...TaskExecStarted.decode(e.event.value) };
        case "/tasks/exit": {
          const x = TaskExit.decode(e.event.value);
          return { topic: e.topic, containerId: x.containerId, id: x.id, pid: x.pid, exitStatus: x.exitStatus };
        }
        default:
          return { topic: e.topic };
      }
    });

  test("exec-added, exec-started, exit with the exec id; Delete of the exec returns its exit and publishes nothing", async () => {
    const s = setup();
    await running(s);
    const initPid = (await s.service.state({ id: "c1", execId: "" }, ctx)).pid;
    await s.service.exec(execReq("e1"), ctx);
    const { pid } = (await EXEC_CALLS.start(s)) as { pid: number };
    s.host.exitExec(NS, "c1", "e1", 3);
    expect(await EXEC_CALLS.wait(s)).toMatchObject({ exitStatus: 3 });
    const del = await s.service.delete({ id: "c1", execId: "e1" }, ctx);
    expect(del).toMatchObject({ pid, exitStatus: 3 });
    expect(del.exitedAt).toBeDefined();
    expect((await refusal(EXEC_CALLS.state(s))).code).toBe(Code.NOT_FOUND);
    expect(decoded(s)).toEqual([
      { topic: "/tasks/create" },
      { topic: "/tasks/start" },
      { topic: "/tasks/exec-added", containerId: "c1", execId: "e1" },
      { topic: "/tasks/exec-started", containerId: "c1", execId: "e1", pid },
      { topic: "/tasks/exit", containerId: "c1", id: "e1", pid, exitStatus: 3 },
    ]);
    expect(pid).not.toBe(initPid);
  });

  test("an exec that exits before its Start has answered: its exit is published after exec-started", async () => {
    const s = setup();
    await execIn(s, "created");
    s.host.runtime(NS).diesOnExec = 1;
    await EXEC_CALLS.start(s);
    expect(await EXEC_CALLS.wait(s)).toMatchObject({ exitStatus: 1 });
    await Promise.resolve();
    expect(s.host.topics(NS)).toEqual(["/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"]);
    expect(await execStatus(s)).toBe(Status.STOPPED); // the exit wins over the Start's "running"
  });

  test("an init exit with execs running: they are killed and their exits come first", async () => {
    const s = setup();
    await running(s);
    for (const id of ["e1", "e2"]) {
      await s.service.exec(execReq(id), ctx);
      await s.service.start({ id: "c1", execId: id }, ctx);
    }
    s.host.exit(NS, "c1", 0);
    expect(await s.service.wait({ id: "c1", execId: "" }, ctx)).toMatchObject({ exitStatus: 0 });
    expect(s.host.signals.map((x) => x.split(" ")[1])).toEqual(["9", "9"]);
    const exits = decoded(s).filter((e) => e.topic === "/tasks/exit");
    expect(exits.map((e) => (e as { id: string }).id)).toEqual(["e1", "e2", "c1"]);
    expect(exits.map((e) => (e as { exitStatus: number }).exitStatus)).toEqual([137, 137, 0]);
    // The task can be deleted; its stopped execs go with it.
    await s.service.delete({ id: "c1", execId: "" }, ctx);
    expect((await refusal(EXEC_CALLS.state(s))).code).toBe(Code.NOT_FOUND);
  });

  test("Pids names each running exec's pid with its exec id (containerd.runc.v1.ProcessDetails)", async () => {
    const s = setup();
    await execIn(s, "running");
    const initPid = (await s.service.state({ id: "c1", execId: "" }, ctx)).pid;
    const { pid } = await EXEC_CALLS.state(s).then((r) => r as { pid: number });
    const { processes } = await s.service.pids({ id: "c1" }, ctx);
    expect(processes).toEqual([
      { pid: initPid, info: undefined },
      // field 1 (exec_id), length-delimited: 0x0a, 2, "e1"
      { pid, info: { typeUrl: "containerd.runc.v1.ProcessDetails", value: Uint8Array.of(0x0a, 2, 0x65, 0x31) } },
    ]);
  });

  test("Kill of an exec signals its process, not the container's", async () => {
    const s = setup();
    await execIn(s, "running");
    const { pid } = await EXEC_CALLS.state(s).then((r) => r as { pid: number });
    await s.service.kill({ id: "c1", execId: "e1", signal: 9, all: false }, ctx);
    expect(await EXEC_CALLS.wait(s)).toMatchObject({ exitStatus: 137 });
    expect(s.host.signals).toEqual([`${pid} 9`]);
    expect(s.host.runtime(NS).calls.filter((c) => c.startsWith("kill"))).toEqual([]);
    expect((await s.service.state({ id: "c1", execId: "" }, ctx)).status).toBe(Status.RUNNING);
  });
});
