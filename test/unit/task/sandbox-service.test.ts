// containerd's Sandbox API over one pod, as a value, with the fake host's Task service (no
// root, no runc, no containerd): every call in every state against the state table, what
// CreateSandbox reads of CRI's PodSandboxConfig, StopSandbox's kills and WaitSandbox's answer,
// the pod's metrics, and a Task Shutdown that must not end a pod containerd still has.
import { afterEach, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { CreateSandboxRequest } from "../../../src/task/gen/containerd/runtime/sandbox/v1/sandbox.ts";
import { CreateTaskRequest } from "../../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Status } from "../../../src/task/gen/containerd/types/task/task.ts";
import { NamespaceMode, PodSandboxConfig } from "../../../src/task/gen/k8s/cri/v1/pod_sandbox_config.ts";
import { hostPlatform, SandboxService } from "../../../src/task/sandbox-service.ts";
import { criStateOf, SANDBOX_TABLE, type SandboxCall, type SandboxState } from "../../../src/task/sandbox-state.ts";
import { TaskService } from "../../../src/task/task-service.ts";
import { Code, TtrpcError } from "../../../src/ttrpc/index.ts";
import { ctxFor, FakeHost } from "./fake-host.ts";

const NS = "k8s.io";
const POD = "pod1";
const PID = 4242;
let hosts: FakeHost[] = [];

afterEach(() => {
  for (const h of hosts) rmSync(h.root, { recursive: true, force: true });
  hosts = [];
});

/** A Task service and the Sandbox service over it, wired as src/runtime-v2/task-server.ts wires them. */
function setup() {
  const host = new FakeHost();
  hosts.push(host);
  const closed = { task: 0, sandbox: 0 };
  let sandbox!: SandboxService;
  const tasks = new TaskService({
    host,
    defaultNamespace: NS,
    shimPid: PID,
    onShutdown: () => closed.task++,
    holdsOpen: () => sandbox.holdsOpen,
  });
  const logs: string[] = [];
  const released: string[] = [];
  const adopted: { id: string; netnsPath: string }[] = [];
  sandbox = new SandboxService({
    tasks,
    pid: PID,
    metrics: (s) => host.metrics(s),
    log: (m) => logs.push(m),
    onShutdown: () => closed.sandbox++,
    adopt: (pod) => adopted.push({ id: pod.id, netnsPath: pod.netnsPath }),
    release: async (id) => {
      // Only once every container has stopped: the holder of their namespaces goes last.
      for (const { namespace, id: c } of tasks.list()) {
        const st = await tasks.state({ id: c, execId: "" }, ctxFor(namespace));
        if (st.status !== Status.STOPPED) throw new Error(`released while ${c} is ${st.status}`);
      }
      released.push(id);
    },
  });
  return { host, tasks, sandbox, closed, logs, released, adopted };
}
type Setup = ReturnType<typeof setup>;

/** CRI's PodSandboxConfig in an Any, as containerd's shim sandboxer passes it. */
function podConfig(network: NamespaceMode = NamespaceMode.NODE, ipc: NamespaceMode = NamespaceMode.POD) {
  const config = PodSandboxConfig.fromPartial({
    metadata: { name: "web", namespace: "default", uid: "u-1", attempt: 0 },
    hostname: "web-host",
    logDirectory: "/var/log/pods/x",
    linux: {
      cgroupParent: "/kubepods/besteffort/podu-1",
      securityContext: { namespaceOptions: { network, ipc } },
      sysctls: { "kernel.shm_rmid_forced": "1" },
    },
  });
  return { typeUrl: PodSandboxConfig.$type, value: PodSandboxConfig.encode(config).finish() };
}

const createReq = (extra: Partial<CreateSandboxRequest> = {}) =>
  CreateSandboxRequest.fromPartial({ sandboxId: POD, bundlePath: `/run/containerd/${POD}`, options: podConfig(), netnsPath: "", ...extra });

async function refusal(p: Promise<unknown>): Promise<TtrpcError> {
  const e = await p.then(
    () => new Error("expected the call to be refused, it succeeded"),
    (err: unknown) => err,
  );
  if (!(e instanceof TtrpcError)) throw e;
  return e;
}

/** The sandbox brought to `state` through its own calls. */
async function inState(s: Setup, state: SandboxState): Promise<void> {
  if (state === "none") return;
  await s.sandbox.createSandbox(createReq());
  if (state === "created") return;
  if (state === "shutdown") {
    await s.sandbox.shutdownSandbox({ sandboxId: POD });
    return;
  }
  await s.sandbox.startSandbox({ sandboxId: POD });
  if (state === "stopped") await s.sandbox.stopSandbox({ sandboxId: POD, timeoutSecs: 0 });
}

const CALLS: Record<SandboxCall, (s: Setup) => Promise<unknown>> = {
  create: (s) => s.sandbox.createSandbox(createReq()),
  start: (s) => s.sandbox.startSandbox({ sandboxId: POD }),
  platform: (s) => s.sandbox.platform({ sandboxId: POD }),
  stop: (s) => s.sandbox.stopSandbox({ sandboxId: POD, timeoutSecs: 0 }),
  wait: (s) => s.sandbox.waitSandbox({ sandboxId: POD }),
  status: (s) => s.sandbox.sandboxStatus({ sandboxId: POD, verbose: false }),
  ping: (s) => s.sandbox.pingSandbox({ sandboxId: POD }),
  shutdown: (s) => s.sandbox.shutdownSandbox({ sandboxId: POD }),
  metrics: (s) => s.sandbox.sandboxMetrics({ sandboxId: POD }),
};

const STATES: SandboxState[] = ["none", "created", "ready", "stopped", "shutdown"];

describe("every Sandbox API call in every state follows the state table", () => {
  for (const state of STATES) {
    for (const call of Object.keys(CALLS) as SandboxCall[]) {
      const rule = SANDBOX_TABLE[state][call];
      const what = rule.allow ? `allowed${rule.to ? `, → ${rule.to}` : ""}` : `refused with ${rule.code}`;
      test(`${state}: ${call} is ${what}`, async () => {
        const s = setup();
        await inState(s, state);
        if (!rule.allow) {
          const e = await refusal(CALLS[call](s));
          expect(e.code).toBe(rule.code);
          expect(e.message).toContain(`state ${state}`);
          expect(s.sandbox.current).toBe(state); // a refused call changes nothing
          return;
        }
        if (call === "wait" && (state === "created" || state === "ready")) {
          // Allowed, and answered once the sandbox stops.
          let answered = false;
          const waiting = CALLS.wait(s).then((r) => {
            answered = true;
            return r;
          });
          await Bun.sleep(0);
          expect(answered).toBe(false);
          await CALLS.stop(s);
          expect(await waiting).toMatchObject({ exitStatus: 0 });
          return;
        }
        await CALLS[call](s);
        expect(s.sandbox.current).toBe(rule.to ?? state);
      });
    }
  }

  test("the cells containerd relies on", () => {
    const cell = (s: SandboxState, c: SandboxCall) => {
      const r = SANDBOX_TABLE[s][c];
      return r.allow ? (r.to ?? s) : r.code;
    };
    expect(cell("none", "create")).toBe("created");
    expect(cell("created", "start")).toBe("ready");
    expect(cell("ready", "stop")).toBe("stopped");
    // CRI's RemovePodSandbox stops again; its Stop, Status and Shutdown take NOT_FOUND as "gone".
    expect(cell("stopped", "stop")).toBe("stopped");
    expect(cell("stopped", "shutdown")).toBe("shutdown");
    expect(cell("shutdown", "shutdown")).toBe("shutdown");
    expect(cell("shutdown", "status")).toBe(Code.NOT_FOUND);
    expect(cell("none", "stop")).toBe(Code.NOT_FOUND);
    expect(cell("ready", "create")).toBe(Code.ALREADY_EXISTS);
    expect(cell("stopped", "start")).toBe(Code.FAILED_PRECONDITION);
  });

  test("SandboxStatus's state is CRI's: READY only when ready", () => {
    expect(STATES.map(criStateOf)).toEqual([
      "SANDBOX_NOTREADY",
      "SANDBOX_NOTREADY",
      "SANDBOX_READY",
      "SANDBOX_NOTREADY",
      "SANDBOX_NOTREADY",
    ]);
  });
});

describe("CreateSandbox", () => {
  test("keeps what CRI's PodSandboxConfig says of the pod: name, hostname, cgroup parent, sysctls, the host's network (and UTS namespace)", async () => {
    const s = setup();
    await s.sandbox.createSandbox(createReq({ annotations: { a: "b" } }));
    expect(s.sandbox.pod).toEqual({
      id: POD,
      bundle: `/run/containerd/${POD}`,
      fromCri: true,
      netnsPath: "",
      name: "web",
      hostname: "web-host",
      namespace: "default",
      uid: "u-1",
      cgroupParent: "/kubepods/besteffort/podu-1",
      sysctls: { "kernel.shm_rmid_forced": "1" },
      nodeNamespaces: ["network", "uts"],
      hostNetwork: true,
      annotations: { a: "b" },
    });
  });

  test("a type URL with a prefix is read too; other options are not a pod config", async () => {
    const s = setup();
    await s.sandbox.createSandbox(createReq({ options: { ...podConfig(), typeUrl: `type.googleapis.com/${PodSandboxConfig.$type}` } }));
    expect(s.sandbox.pod?.cgroupParent).toBe("/kubepods/besteffort/podu-1");
    const t = setup();
    await t.sandbox.createSandbox(createReq({ options: { typeUrl: "example.Other", value: new Uint8Array([1, 2, 3]) } }));
    expect(t.sandbox.pod).toMatchObject({ name: "", cgroupParent: "", hostNetwork: true });
  });

  test("a PodSandboxConfig that does not decode is INVALID_ARGUMENT, and nothing is created", async () => {
    const s = setup();
    const e = await refusal(
      s.sandbox.createSandbox(createReq({ options: { typeUrl: PodSandboxConfig.$type, value: new Uint8Array([0x0a, 0x05, 0x01]) } })),
    );
    expect(e.code).toBe(Code.INVALID_ARGUMENT);
    expect(s.sandbox.current).toBe("none");
  });

  test("a pod with a network namespace of its own: the host adopts the pod with CRI's namespace (a host-network pod's is \"\")", async () => {
    const s = setup();
    // A network namespace file, as CRI's bind mount of one is: our own, through /proc.
    const netns = `/proc/${process.pid}/ns/net`;
    await s.sandbox.createSandbox(createReq({ options: podConfig(NamespaceMode.POD, NamespaceMode.NODE), netnsPath: netns }));
    // hostIPC: the one namespace it shares with the node.
    expect(s.sandbox.pod).toMatchObject({ netnsPath: netns, hostNetwork: false, nodeNamespaces: ["ipc"] });
    expect(s.adopted).toEqual([{ id: POD, netnsPath: netns }]);
    const h = setup();
    await h.sandbox.createSandbox(createReq());
    expect(h.adopted).toEqual([{ id: POD, netnsPath: "" }]);
  });

  test("a netns path that is not a namespace, or not there, is FAILED_PRECONDITION (never UNIMPLEMENTED), and nothing is created or adopted", async () => {
    for (const path of ["/var/run/netns/cni-not-there", "/proc/self/stat", "relative/ns"]) {
      const s = setup();
      const e = await refusal(s.sandbox.createSandbox(createReq({ options: podConfig(NamespaceMode.POD), netnsPath: path })));
      expect(`${path}: ${e.code}`).toBe(`${path}: ${Code.FAILED_PRECONDITION}`);
      expect(e.message).toContain(path);
      expect(s.sandbox.current).toBe("none");
      expect(s.adopted).toEqual([]);
    }
  });

  test("no sandbox id: INVALID_ARGUMENT", async () => {
    const s = setup();
    expect((await refusal(s.sandbox.createSandbox(createReq({ sandboxId: "" })))).code).toBe(Code.INVALID_ARGUMENT);
  });

  test("a call for another sandbox than the one created: NOT_FOUND", async () => {
    const s = setup();
    await inState(s, "ready");
    const e = await refusal(s.sandbox.sandboxStatus({ sandboxId: "other", verbose: false }));
    expect(e.code).toBe(Code.NOT_FOUND);
    expect(e.message).toContain(POD);
  });
});

describe("the running pod", () => {
  test("StartSandbox and SandboxStatus answer the serving process's pid and the creation time", async () => {
    const s = setup();
    const before = Math.floor(Date.now() / 1000);
    await s.sandbox.createSandbox(createReq());
    const started = await s.sandbox.startSandbox({ sandboxId: POD });
    expect(started.pid).toBe(PID);
    expect(started.createdAt!.seconds).toBeGreaterThanOrEqual(before);
    const st = await s.sandbox.sandboxStatus({ sandboxId: POD, verbose: false });
    expect(st).toMatchObject({ sandboxId: POD, pid: PID, state: "SANDBOX_READY", exitedAt: undefined });
    expect(st.createdAt).toEqual(started.createdAt);
  });

  test("Platform: linux and this host's architecture", async () => {
    const s = setup();
    await inState(s, "ready");
    expect((await s.sandbox.platform({ sandboxId: POD })).platform).toEqual(hostPlatform());
    expect(hostPlatform("x64")).toMatchObject({ os: "linux", architecture: "amd64" });
    expect(hostPlatform("arm64")).toMatchObject({ os: "linux", architecture: "arm64", variant: "v8" });
    expect(() => hostPlatform("mips")).toThrow(/no OCI platform/);
  });

  test("a Task Shutdown with no container left does not end a pod containerd still has; ShutdownSandbox does", async () => {
    const s = setup();
    await inState(s, "ready");
    const ctx = ctxFor(NS);
    await s.tasks.create(CreateTaskRequest.fromPartial({ id: "c1", bundle: "/bundles/c1" }), ctx);
    s.host.exit(NS, "c1", 0);
    await s.tasks.delete({ id: "c1", execId: "" }, ctx);
    await s.tasks.shutdown({ id: "c1", now: false });
    await Bun.sleep(1);
    expect(s.closed.task).toBe(0);
    expect(s.tasks.shuttingDown).toBe(false);
    // The pod goes on: another container is taken.
    await s.tasks.create(CreateTaskRequest.fromPartial({ id: "c2", bundle: "/bundles/c2" }), ctx);
    s.host.exit(NS, "c2", 0);
    await s.tasks.delete({ id: "c2", execId: "" }, ctx);

    await s.sandbox.stopSandbox({ sandboxId: POD, timeoutSecs: 0 });
    await s.tasks.shutdown({ id: "c2", now: false });
    await Bun.sleep(1);
    expect(s.closed.task).toBe(0); // stopped is not gone: containerd shuts it down later
    await s.sandbox.shutdownSandbox({ sandboxId: POD });
    await Bun.sleep(1);
    expect(s.closed.sandbox).toBe(1);
  });

  test("without the Sandbox API (state none), a Task Shutdown with nothing left stops the service as before", async () => {
    const s = setup();
    await s.tasks.shutdown({ id: "x", now: false });
    await Bun.sleep(1);
    expect(s.closed.task).toBe(1);
  });

  test("SandboxMetrics: the pod's running containers' statistics added up, with the sandbox id", async () => {
    const s = setup();
    await inState(s, "ready");
    const ctx = ctxFor(NS);
    for (const id of ["c1", "c2", "c3"]) await s.tasks.create(CreateTaskRequest.fromPartial({ id, bundle: `/bundles/${id}` }), ctx);
    // One has exited: it adds nothing.
    await s.tasks.start({ id: "c3", execId: "" }, ctx);
    s.host.exit(NS, "c3", 0);
    await s.tasks.wait({ id: "c3", execId: "" }, ctx);
    const { metrics } = await s.sandbox.sandboxMetrics({ sandboxId: POD });
    expect(metrics?.id).toBe(POD);
    expect(metrics?.data?.typeUrl).toBe("fake.Metrics");
    // The fake runtime reports pids 1 of 10 for each: two containers, 2 of 20.
    expect(JSON.parse(new TextDecoder().decode(metrics?.data?.value)).pids).toEqual({ current: 2, limit: 20 });
  });
});

describe("StopSandbox, WaitSandbox, ShutdownSandbox", () => {
  async function withContainers(s: Setup, ids: string[]) {
    await inState(s, "ready");
    const ctx = ctxFor(NS);
    for (const id of ids) {
      await s.tasks.create(CreateTaskRequest.fromPartial({ id, bundle: `/bundles/${id}` }), ctx);
      await s.tasks.start({ id, execId: "" }, ctx);
    }
  }

  test("no timeout (CRI's): each container gets SIGKILL; WaitSandbox answers exit 0 and the stop's time", async () => {
    const s = setup();
    await withContainers(s, ["c1", "c2"]);
    const waiting = s.sandbox.waitSandbox({ sandboxId: POD });
    const before = Math.floor(Date.now() / 1000);
    await s.sandbox.stopSandbox({ sandboxId: POD, timeoutSecs: 0 });
    expect(s.host.runtime(NS).calls.filter((c) => c.startsWith("kill"))).toEqual(["kill c1 9", "kill c2 9"]);
    for (const id of ["c1", "c2"]) expect((await s.tasks.wait({ id, execId: "" }, ctxFor(NS))).exitStatus).toBe(137);
    const w = await waiting;
    expect(w.exitStatus).toBe(0);
    expect(w.exitedAt!.seconds).toBeGreaterThanOrEqual(before);
    const st = await s.sandbox.sandboxStatus({ sandboxId: POD, verbose: false });
    expect(st.state).toBe("SANDBOX_NOTREADY");
    expect(st.exitedAt).toEqual(w.exitedAt);
    // A WaitSandbox after the stop answers the same at once.
    expect(await s.sandbox.waitSandbox({ sandboxId: POD })).toEqual(w);
    // What the host holds for the pod (a holder of its namespaces) went once its containers had stopped.
    expect(s.released).toEqual([POD]);
    expect(s.logs.filter((l) => l.includes("releasing"))).toEqual([]);
  });

  test("a timeout: SIGTERM first, and no SIGKILL for a container that exits on it", async () => {
    const s = setup();
    await withContainers(s, ["c1"]);
    await s.sandbox.stopSandbox({ sandboxId: POD, timeoutSecs: 30 });
    expect(s.host.runtime(NS).calls.filter((c) => c.startsWith("kill"))).toEqual(["kill c1 15"]);
    expect(s.sandbox.current).toBe("stopped");
  });

  test("two StopSandbox side by side kill once and both answer when the pod has stopped", async () => {
    const s = setup();
    await withContainers(s, ["c1"]);
    await Promise.all([
      s.sandbox.stopSandbox({ sandboxId: POD, timeoutSecs: 0 }),
      s.sandbox.stopSandbox({ sandboxId: POD, timeoutSecs: 0 }),
    ]);
    expect(s.host.runtime(NS).calls.filter((c) => c.startsWith("kill"))).toEqual(["kill c1 9"]);
  });

  test("ShutdownSandbox of a pod still running (a rolled-back RunPodSandbox): killed, deleted, waiters answered, then closed", async () => {
    const s = setup();
    await withContainers(s, ["c1"]);
    const waiting = s.sandbox.waitSandbox({ sandboxId: POD });
    await s.sandbox.shutdownSandbox({ sandboxId: POD });
    expect((await waiting).exitStatus).toBe(0);
    expect(s.tasks.list()).toEqual([]);
    expect(s.host.runtime(NS).containers.size).toBe(0);
    expect(s.released).toEqual([POD]);
    await Bun.sleep(1);
    expect(s.closed.sandbox).toBe(1);
    // containerd's later calls find nothing.
    expect((await refusal(s.sandbox.sandboxStatus({ sandboxId: POD, verbose: false }))).code).toBe(Code.NOT_FOUND);
  });
});
