// One shim server, two containerd namespaces, one container id: the namespace of each call
// comes from the ttrpc metadata containerd sets (containerd-namespace-ttrpc), and each
// namespace has its own runtime root and state directory. Driven directly over ttrpc with
// real runc. Needs root.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Spec } from "../../src/oci/spec.ts";
import { socketPath } from "../../src/runtime-v2/address.ts";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { Status } from "../../src/task/gen/containerd/types/task/task.ts";
import { NAMESPACE_METADATA_KEY } from "../../src/task/task-service.ts";
import { TaskV3 as TaskDefinition } from "../../src/task/task-v3.ts";
import { Client, Code, TtrpcError } from "../../src/ttrpc/index.ts";
import { REPO, type ShimEnv, shimEnv, WASM } from "../support/shim-env.ts";

const SHIM = join(REPO, "build/bin/containerd-shim-wasmtime-v1");
const T = 60_000;

describe("one shim, two namespaces, the same container id", () => {
  let env: ShimEnv;
  let client: Client | undefined;
  const id = `same-${process.pid}`;
  const nsB = `bw-other-${process.pid}`;

  function bundle(ns: string, args: string[]): string {
    const dir = join(env.dir, "bundles", ns, id);
    mkdirSync(join(dir, "rootfs"), { recursive: true });
    copyFileSync(join(WASM, "wasi-demo-app.wasm"), join(dir, "rootfs/wasi-demo-app.wasm"));
    const r = Bun.spawnSync(["runc", "spec"], { cwd: dir });
    if (r.exitCode !== 0) throw new Error(`runc spec: ${r.stderr}`);
    const spec = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Spec & { linux: { cgroupsPath?: string } };
    spec.process.terminal = false;
    spec.process.args = args;
    spec.root = { path: "rootfs", readonly: false };
    // As containerd does, one cgroup per (namespace, id); under the harness's namespace so
    // its stop clears them.
    spec.linux.cgroupsPath = `/${env.cd.namespace}/${ns}-${id}`;
    writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
    return dir;
  }

  beforeAll(async () => {
    env = await shimEnv();
  }, T);

  afterAll(async () => {
    client?.close();
    await env?.stop();
  }, T);

  test(
    "calls reach the container of the namespace in their metadata; none falls back to -namespace",
    async () => {
      const nsA = env.cd.namespace;
      const bundleA = bundle(nsA, ["/wasi-demo-app.wasm", "exit", "3"]);
      const bundleB = bundle(nsB, ["/wasi-demo-app.wasm", "exit", "4"]);
      const started = Bun.spawnSync(
        [SHIM, "-namespace", nsA, "-address", env.cd.address, "-publish-binary", "/usr/bin/containerd", "-id", id, "start"],
        {
          cwd: bundleA,
          env: { ...(process.env as Record<string, string>), TTRPC_ADDRESS: env.cd.ttrpcAddress },
          stdin: "ignore",
          stdout: "pipe",
          stderr: "pipe",
        },
      );
      if (started.exitCode !== 0) throw new Error(`start: ${started.stderr}`);
      client = await Client.connect(socketPath(started.stdout.toString()));
      const task = client.service(TaskDefinition);
      const inA = { metadata: { [NAMESPACE_METADATA_KEY]: nsA } };
      const inB = { metadata: { [NAMESPACE_METADATA_KEY]: nsB } };
      const create = (bundleDir: string, o: typeof inA) =>
        task.create(
          {
            id,
            bundle: bundleDir,
            rootfs: [],
            terminal: false,
            stdin: "",
            stdout: "",
            stderr: "",
            checkpoint: "",
            parentCheckpoint: "",
            options: undefined,
          },
          o,
        );

      const a = await create(bundleA, inA);
      const b = await create(bundleB, inB);
      expect(a.pid).not.toBe(b.pid);
      for (const ns of [nsA, nsB]) {
        expect(existsSync(join(runtimeRoot(ns), id))).toBe(true);
        expect(existsSync(join(containerStateDir(ns), id))).toBe(true);
      }
      // No metadata: the -namespace flag's container.
      expect((await task.state({ id, execId: "" })).bundle).toBe(bundleA);
      expect((await task.state({ id, execId: "" }, inB)).bundle).toBe(bundleB);

      const waitB = task.wait({ id, execId: "" }, inB);
      await task.start({ id, execId: "" }, inB);
      expect((await waitB).exitStatus).toBe(4);
      expect((await task.state({ id, execId: "" }, inA)).status).toBe(Status.CREATED);
      await task.delete({ id, execId: "" }, inB);
      const gone = await task.state({ id, execId: "" }, inB).catch((e: unknown) => e);
      expect(gone).toBeInstanceOf(TtrpcError);
      expect((gone as TtrpcError).code).toBe(Code.NOT_FOUND);
      expect(existsSync(join(runtimeRoot(nsB), id))).toBe(false);

      const waitA = task.wait({ id, execId: "" }, inA);
      await task.start({ id, execId: "" }, inA);
      expect((await waitA).exitStatus).toBe(3);
      await task.delete({ id, execId: "" }, inA);
      expect(existsSync(join(containerStateDir(nsA), id))).toBe(false);

      // With nothing left in any namespace, Shutdown ends the server; the namespaces' folders
      // go with it.
      await task.shutdown({ id, now: false });
      const deadline = Date.now() + 30_000; // liveness only
      while (existsSync(runtimeRoot(nsB)) && Date.now() < deadline) await Bun.sleep(50);
      expect(existsSync(runtimeRoot(nsB))).toBe(false);
      expect(existsSync(containerStateDir(nsB))).toBe(false);
    },
    T,
  );
});
