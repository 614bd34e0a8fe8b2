// A shared-mode sandbox's TaskHost (src/daemon/sandbox-host.ts) under a real Task service, with no
// containerd: a native container is a runc instance as in normal mode, with the runc its
// runtime options name; a wasm container is an in-process instance, which refuses a
// terminal and an Exec of a native binary with the reason and adds an Exec of a module; a
// refused or failed Create leaves no state behind.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InProcessInstance } from "../../../src/daemon/inproc-runtime.ts";
import type { DaemonShared, SandboxNamespace } from "../../../src/daemon/sandbox-host.ts";
import { sandboxHost } from "../../../src/daemon/sandbox-host.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { ExitWatcher } from "../../../src/linux/exit-watcher.ts";
import { holdSessionTerminal } from "../../../src/linux/pty.ts";
import { CreateTaskRequest, DeleteRequest, ExecProcessRequest } from "../../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import type { InstanceRequest } from "../../../src/task/instance.ts";
import { TaskService } from "../../../src/task/task-service.ts";
import { UndoStack } from "../../../src/task/undo.ts";
import { Code } from "../../../src/ttrpc/index.ts";
import { ctxFor } from "../task/fake-host.ts";

const watcher = new ExitWatcher({ reapIntervalMs: 0 });
afterAll(() => watcher.close());

let dir: string;
let shared: DaemonShared;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "sbhost-"));
  shared = {
    paths: { stateRoot: join(dir, "run"), dataRoot: join(dir, "data"), compileCacheDir: join(dir, "data/cache") },
    log: () => {},
    watcher,
    engine: wasmtime,
    runner: () => Promise.reject(new Error("no run in this test")),
    runtimeBinary: "/usr/bin/runc-default",
    cgroupV2: false,
    pid: process.pid,
  };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A bundle whose process is a wasm module (just the magic and version: enough to be recognised). */
function wasmBundle(name: string): string {
  const bundle = join(dir, name);
  mkdirSync(join(bundle, "rootfs"), { recursive: true });
  writeFileSync(join(bundle, "rootfs/app.wasm"), new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
  writeFileSync(
    join(bundle, "config.json"),
    JSON.stringify({ ociVersion: "1.0.2", process: { args: ["/app.wasm"], cwd: "/", env: [] }, root: { path: "rootfs" } }),
  );
  return bundle;
}

/** A bundle whose process is a native program (a script), as a pod's pause container is. */
function nativeBundle(name: string): string {
  const bundle = join(dir, name);
  mkdirSync(join(bundle, "rootfs/bin"), { recursive: true });
  writeFileSync(join(bundle, "rootfs/bin/pause"), "#!/bin/sh\n", { mode: 0o755 });
  writeFileSync(
    join(bundle, "config.json"),
    JSON.stringify({ ociVersion: "1.0.2", process: { args: ["/bin/pause"], cwd: "/", env: [] }, root: { path: "rootfs" } }),
  );
  return bundle;
}

function request(id: string, bundle: string, over: Partial<InstanceRequest> = {}): InstanceRequest {
  const workDir = join(dir, "state", id);
  mkdirSync(workDir, { recursive: true });
  return {
    namespace: "k8s.io",
    id,
    bundle,
    workDir,
    io: { stdio: [0, 1, 2], console: null },
    runtimeOptions: null,
    undo: new UndoStack(),
    onOom: () => {},
    ...over,
  };
}

/** How many pty masters this process holds open. */
function ptyMasters(): number {
  return readdirSync("/proc/self/fd").filter((f) => {
    try {
      return readlinkSync(`/proc/self/fd/${f}`) === "/dev/ptmx";
    } catch {
      return false;
    }
  }).length;
}

describe("sandboxHost", () => {
  test("a native container runs under runc as in normal mode, with the runc its runtime options name (BinaryName, Root, SystemdCgroup)", async () => {
    // A stand-in runc: logs its arguments; its "init" is a process that has exited already.
    const calls = join(dir, "calls");
    const script = join(dir, "my-runc");
    writeFileSync(
      script,
      `#!/bin/sh\necho "$@" >> ${calls}\nprev=""\nfor a; do [ "$prev" = --pid-file ] && { true & p=$!; wait $p; echo $p > "$a"; }; prev=$a; done\nexit 0\n`,
    );
    chmodSync(script, 0o755);
    const host = sandboxHost({ ...shared, runtimeBinary: script }, "/nowhere.ttrpc", new Map());
    const withOptions = request("pause1", nativeBundle("b1"), {
      runtimeOptions: { binaryName: script, root: "/var/my-root", systemdCgroup: true },
    });
    const inst = await host.createInstance(withOptions);
    expect(inst.kind).toBe("native");
    expect(inst).not.toBeInstanceOf(InProcessInstance);
    const plain = request("pause2", nativeBundle("b2"));
    await host.createInstance(plain);
    const lines = readFileSync(calls, "utf8").trim().split("\n");
    // runc-v2's rules: Root gets the namespace appended; no options: the daemon's runc and root.
    expect(lines[0]).toStartWith(
      `--root /var/my-root/k8s.io --systemd-cgroup --log ${withOptions.workDir}/runtime.log --log-format json create --bundle ${join(dir, "b1")}`,
    );
    expect(lines[1]).toStartWith(`--root ${join(dir, "run/runc/k8s.io")} --log`);
    for (const r of [withOptions, plain]) expect(await r.undo.run()).toEqual([]);
  });

  test("a wasm container runs in the daemon, from its plan", async () => {
    const host = sandboxHost(shared, "/nowhere.ttrpc", new Map());
    const req = request("w1", wasmBundle("b1"));
    const inst = await host.createInstance(req);
    expect(inst).toBeInstanceOf(InProcessInstance);
    expect(inst.pid).toBe(process.pid);
    expect(await req.undo.run()).toEqual([]);
  });

  test("a Create that fails leaves no state, and the id can be created again (with a terminal, deleted without a trace)", async () => {
    const namespaces = new Map<string, SandboxNamespace>();
    const service = new TaskService({
      host: sandboxHost(shared, "/nowhere.ttrpc", namespaces),
      defaultNamespace: "default",
      shimPid: 1,
      onShutdown: () => {},
    });
    const bundle = wasmBundle("b1");
    // Its stdin cannot be opened.
    for (let i = 0; i < 2; i++) {
      const create = service.create(
        CreateTaskRequest.fromPartial({ id: "c1", bundle, rootfs: [], stdin: join(dir, "no-such-fifo"), stdout: "", stderr: "" }),
        ctxFor("default"),
      );
      await expect(create).rejects.toThrow("no-such-fifo");
      expect(readdirSync(namespaces.get("default")!.stateDir)).toEqual([]);
    }
    // Created again, with a terminal (a pty of the daemon's): its Delete leaves no state, no fd.
    // (A process that leads a session with no terminal takes one of its own at its first pty, and
    // holds it for its life, src/linux/pty.ts: taken first, it is not the container's.)
    holdSessionTerminal();
    const fds = readdirSync("/proc/self/fd").length;
    await service.create(CreateTaskRequest.fromPartial({ id: "c1", bundle, rootfs: [], terminal: true }), ctxFor("default"));
    expect(ptyMasters()).toBeGreaterThan(0);
    await service.delete(DeleteRequest.fromPartial({ id: "c1" }), ctxFor("default"));
    expect(readdirSync(namespaces.get("default")!.stateDir)).toEqual([]);
    // The pump's master is let go of by Bun's reader once its close() has returned: look again
    // until it is (liveness only; the count must come back to what it was).
    for (let i = 0; i < 200 && readdirSync("/proc/self/fd").length > fds; i++) await Bun.sleep(10);
    expect(readdirSync("/proc/self/fd").length).toBe(fds);
  });

  test("exec into a wasm container: a module is added; a native binary is refused with the reason, and nothing of it is kept", async () => {
    const service = new TaskService({
      host: sandboxHost(shared, "/nowhere.ttrpc", new Map()),
      defaultNamespace: "default",
      shimPid: 1,
      onShutdown: () => {},
    });
    const ctx = ctxFor("default");
    const bundle = wasmBundle("b1");
    mkdirSync(join(bundle, "rootfs/bin"));
    writeFileSync(join(bundle, "rootfs/bin/sh"), "#!/bin/sh\n", { mode: 0o755 });
    await service.create(CreateTaskRequest.fromPartial({ id: "w1", bundle, rootfs: [] }), ctx);
    const exec = (execId: string, args: string[]) =>
      ExecProcessRequest.fromPartial({
        id: "w1",
        execId,
        spec: { typeUrl: "x", value: new TextEncoder().encode(JSON.stringify({ args, cwd: "/" })) },
      });
    await service.exec(exec("e0", ["/app.wasm", "x"]), ctx);
    expect(await service.state({ id: "w1", execId: "e0" }, ctx)).toMatchObject({ execId: "e0", pid: 0 });
    await expect(service.exec(exec("e1", ["/bin/sh"]), ctx)).rejects.toMatchObject({
      code: Code.FAILED_PRECONDITION,
      message: expect.stringContaining(
        "exec e1 in wasm container w1: /bin/sh is a native program, and in shared mode a wasm container runs on a thread of the daemon: it has no Linux container to run a process in",
      ),
    });
    await expect(service.state({ id: "w1", execId: "e1" }, ctx)).rejects.toMatchObject({ code: Code.NOT_FOUND });
    await service.delete({ id: "w1", execId: "e0" }, ctx);
    expect(await service.delete({ id: "w1", execId: "" }, ctx)).toMatchObject({ exitStatus: 137 });
  });
});
