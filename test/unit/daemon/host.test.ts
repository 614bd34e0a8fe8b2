// A shared-mode sandbox's TaskHost (src/daemon/host.ts) under a real Task service, with no
// containerd: runtime options choose the runc of native containers as in normal mode, a
// wasm container's exec is refused before anything is prepared, and a Create that fails
// between preparing the bundle and the runtime's create leaves no in-process plan behind.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DaemonShared, SandboxNamespace } from "../../../src/daemon/host.ts";
import { sandboxHost } from "../../../src/daemon/host.ts";
import { HybridRuntime } from "../../../src/daemon/inproc-runtime.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { ExitWatcher } from "../../../src/linux/reaper.ts";
import { Runc } from "../../../src/linux/runc.ts";
import { CreateTaskRequest } from "../../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { TaskService } from "../../../src/task/task-service.ts";
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

describe("sandboxHost", () => {
  test("runtime options (BinaryName, Root, SystemdCgroup) choose the runc of the namespace's native containers, as in normal mode", () => {
    const namespaces = new Map<string, SandboxNamespace>();
    const host = sandboxHost(shared, "/nowhere.ttrpc", namespaces);
    const ns = host.namespace("k8s.io");
    const plain = ns.runtime as HybridRuntime;
    const withOpts = ns.runtimeWith?.({ binaryName: "/opt/my-runc", root: "/var/my-root", systemdCgroup: true });
    expect(withOpts).toBeInstanceOf(HybridRuntime);
    const h = withOpts as HybridRuntime;
    // The same in-process runtime: a wasm container still runs in the daemon, its plan is found.
    expect(h.inProcess).toBe(plain.inProcess);
    const runc = (h as unknown as { runc: Runc }).runc;
    expect(runc).toBeInstanceOf(Runc);
    expect(runc.root).toBe("/var/my-root/k8s.io"); // runc-v2: Root gets the namespace appended
    expect((runc as unknown as { opts: { binary: string; systemdCgroup?: boolean } }).opts).toMatchObject({
      binary: "/opt/my-runc",
      systemdCgroup: true,
    });
    const defaults = (plain as unknown as { runc: Runc }).runc;
    expect(defaults.root).toBe(join(dir, "run/runc/k8s.io"));
    // Options naming no binary or root keep the daemon's.
    if (!ns.runtimeWith) throw new Error("the sandbox host honours no runtime options");
    const partial = (ns.runtimeWith({ systemdCgroup: true }) as unknown as { runc: Runc }).runc;
    expect(partial.root).toBe(join(dir, "run/runc/k8s.io"));
    expect((partial as unknown as { opts: { binary: string } }).opts.binary).toBe("/usr/bin/runc-default");
  });

  test("a Create that fails after the bundle is prepared (stdin cannot be opened) leaves no in-process plan and no state", async () => {
    const namespaces = new Map<string, SandboxNamespace>();
    const service = new TaskService({
      host: sandboxHost(shared, "/nowhere.ttrpc", namespaces),
      defaultNamespace: "default",
      shimPid: 1,
      onShutdown: () => {},
    });
    const bundle = wasmBundle("b1");
    const create = service.create(
      CreateTaskRequest.fromPartial({ id: "c1", bundle, rootfs: [], stdin: join(dir, "no-such-fifo"), stdout: "", stderr: "" }),
      ctxFor("default"),
    );
    await expect(create).rejects.toThrow("no-such-fifo");
    const ns = namespaces.get("default");
    expect(ns).toBeDefined();
    expect([...ns!.runtime.inProcess.plans.keys()]).toEqual([]);
    expect(ns!.runtime.inProcess.size).toBe(0);
    expect(readdirSync(ns!.stateDir)).toEqual([]);
    // The same id can be created again (here it fails the same way, again leaving nothing).
    await expect(
      service.create(CreateTaskRequest.fromPartial({ id: "c1", bundle, rootfs: [], stdin: join(dir, "no-such-fifo") }), ctxFor("default")),
    ).rejects.toThrow("no-such-fifo");
    expect(ns!.runtime.inProcess.plans.size).toBe(0);
  });

  test("exec into a wasm container is refused with the reason, before anything is prepared", async () => {
    const host = sandboxHost(shared, "/nowhere.ttrpc", new Map());
    await expect(
      host.prepareExec({ id: "w1", bundle: "/b", runtimeBundle: "/w", kind: "wasm" }, { args: ["/x.wasm"], cwd: "/" }),
    ).rejects.toThrow("Exec of wasm container w1 is not supported in shared mode (it runs in the daemon, not in a process of its own)");
  });
});
