// One shim per pod: containers that carry the same CRI sandbox id reach the same shim
// server, which runs them side by side. Driven directly over ttrpc (as containerd's CRI
// plugin would), under both task API names, with a private containerd receiving events.
// In both modes: normal (a `serve` process per pod) and shared (the thin shim's `start` gets
// the pod's sandbox in the containerd-wasmtimed daemon this file starts; no process of its
// own, and every wasm task's pid is the daemon's). Needs root and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Spec } from "../../src/oci/spec.ts";
import { socketPath } from "../../src/runtime-v2/address.ts";
import { TaskDefinition as TaskV2 } from "../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Status } from "../../src/task/gen/containerd/types/task/task.ts";
import { TaskV3 } from "../../src/task/task-v3.ts";
import { Client, Code, TtrpcError } from "../../src/ttrpc/index.ts";
import { type Daemon, startDaemon } from "../support/daemon.ts";
import { REPO, removeNamespaceDirs, type ShimEnv, shimEnv, WASM } from "../support/shim-env.ts";

const T = 60_000;
const MODES = [
  { name: "normal", shim: join(REPO, "build/bin/containerd-shim-wasmtime-v1"), shared: false },
  { name: "shared", shim: join(REPO, "build/bin/containerd-shim-wasmtimed-v1"), shared: true },
] as const;

describe.each(MODES.map((m) => [m.name, m] as const))("one shim per pod, %s mode", (_name, mode) => {
  const SHIM = mode.shim;
  let env: ShimEnv;
  let daemon: Daemon | undefined;
  const pod = `pod-${process.pid}`;
  const ids = { a: `a-${process.pid}`, b: `b-${process.pid}`, c: `c-${process.pid}` };
  const bundles: Record<string, string> = {};
  let address = "";
  let client: Client;

  function bundle(id: string, args: string[]): string {
    const dir = join(env.dir, "bundles", id);
    mkdirSync(join(dir, "rootfs"), { recursive: true });
    copyFileSync(join(WASM, "wasi-demo-app.wasm"), join(dir, "rootfs/wasi-demo-app.wasm"));
    const r = Bun.spawnSync(["runc", "spec"], { cwd: dir });
    if (r.exitCode !== 0) throw new Error(`runc spec: ${r.stderr}`);
    const spec = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Spec;
    spec.process.terminal = false;
    spec.process.args = args;
    spec.root = { path: "rootfs", readonly: false };
    spec.annotations = { "io.kubernetes.cri.sandbox-id": pod };
    writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
    return dir;
  }

  function start(id: string): string {
    const r = Bun.spawnSync(
      [SHIM, "-namespace", env.cd.namespace, "-address", env.cd.address, "-publish-binary", "/usr/bin/containerd", "-id", id, "start"],
      {
        cwd: bundles[id],
        env: { ...(process.env as Record<string, string>), TTRPC_ADDRESS: env.cd.ttrpcAddress, ...(daemon?.env ?? {}) },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      },
    );
    if (r.exitCode !== 0) throw new Error(`start ${id}: ${r.stderr}`);
    return r.stdout.toString();
  }

  function serveProcesses(): number[] {
    const out: number[] = [];
    for (const d of require("node:fs").readdirSync("/proc") as string[]) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const cmd = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0");
        if (cmd.includes("serve") && cmd.includes(env.cd.namespace)) out.push(Number(d));
      } catch {}
    }
    return out;
  }

  /** Shared mode: the daemon's sandboxes for this pod (ListSandboxes), with their container counts. */
  async function sandboxes(): Promise<{ address: string; containers: number }[]> {
    const { client: c, manager } = await daemon!.manager();
    try {
      return (await manager.listSandboxes({})).sandboxes.filter((s) => s.id === pod);
    } finally {
      c.close();
    }
  }

  beforeAll(async () => {
    if (mode.shared) daemon = await startDaemon(mkdtempSync("/tmp/bwp-"));
    env = await shimEnv(daemon ? { env: daemon.env } : {});
    bundles[ids.a] = bundle(ids.a, ["/wasi-demo-app.wasm", "exit", "3"]);
    bundles[ids.b] = bundle(ids.b, ["/wasi-demo-app.wasm", "echo", "from", "b"]);
    bundles[ids.c] = bundle(ids.c, ["/wasi-demo-app.wasm", "daemon"]);
  }, T);

  afterAll(async () => {
    client?.close();
    const ns = env?.cd.namespace;
    await env?.stop();
    if (daemon) {
      expect(await daemon.stop("SIGTERM")).toBe(0);
      rmSync(dirname(daemon.socket), { recursive: true, force: true });
    }
    // Shared mode: the sandbox made the namespace's work-dir folder, and containerd's `shim
    // delete` (which removes it once empty) never runs for a sandbox driven without containerd.
    if (ns) removeNamespaceDirs(ns);
  }, T);

  test(
    "every container of the pod gets the same shim address, and one server",
    async () => {
      address = start(ids.a);
      // A sandbox's socket names the pod (a hash) and the daemon that serves it (its pid).
      if (daemon)
        expect(address).toMatch(new RegExp(`^unix://${join(daemon.socket, "..", "sandboxes")}/[0-9a-f]{24}\\.${daemon.pid}\\.sock$`));
      else expect(address).toMatch(/^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
      expect(start(ids.b)).toBe(address);
      expect(start(ids.c)).toBe(address);
      for (const id of Object.values(ids)) expect(readFileSync(join(bundles[id]!, "address"), "utf8")).toBe(address);
      if (daemon) {
        // No process of its own: one sandbox in the daemon, on that address.
        expect(serveProcesses()).toEqual([]);
        expect((await sandboxes()).map((s) => s.address)).toEqual([address]);
      } else expect(serveProcesses().length).toBe(1);
    },
    T,
  );

  test(
    "the one server runs the pod's containers side by side, under task v2 and v3",
    async () => {
      client = await Client.connect(socketPath(address));
      const v2 = client.service(TaskV2);
      const v3 = client.service(TaskV3);
      const out = (id: string) => join(env.dir, `${id}.out`);
      const create = (task: typeof v2 | typeof v3, id: string) =>
        task.create({
          id,
          bundle: bundles[id]!,
          rootfs: [],
          terminal: false,
          stdin: "",
          stdout: `file://${out(id)}`,
          stderr: `file://${out(id)}.err`,
          checkpoint: "",
          parentCheckpoint: "",
          options: undefined,
        });
      const a = await create(v2, ids.a);
      const b = await create(v3, ids.b);
      const c = await create(v2, ids.c);
      // Shared mode: each wasm task's pid is the daemon's, the process that runs it.
      if (daemon) expect([a.pid, b.pid, c.pid]).toEqual([daemon.pid, daemon.pid, daemon.pid]);
      else expect(new Set([a.pid, b.pid, c.pid]).size).toBe(3);
      expect((await v3.state({ id: ids.a, execId: "" })).status).toBe(Status.CREATED);

      const waits = [ids.a, ids.b].map((id) => v2.wait({ id, execId: "" }));
      await v2.start({ id: ids.a, execId: "" });
      await v3.start({ id: ids.b, execId: "" });
      await v2.start({ id: ids.c, execId: "" });
      const [wa, wb] = await Promise.all(waits);
      expect(wa!.exitStatus).toBe(3);
      expect(wb!.exitStatus).toBe(0);
      expect(readFileSync(out(ids.b), "utf8")).toBe("from b\nexiting\n");

      // The daemon keeps running while its neighbours come and go.
      const sc = await v2.state({ id: ids.c, execId: "" });
      expect(sc.status).toBe(Status.RUNNING);
      expect((await v2.pids({ id: ids.c })).processes.map((p) => p.pid)).toContain(c.pid);
      for (const id of [ids.a, ids.b]) {
        const st = await v2.state({ id, execId: "" });
        expect(st.status).toBe(Status.STOPPED);
        const del = await v2.delete({ id, execId: "" });
        expect(del.pid).toBeGreaterThan(0);
      }

      // As runc-v2: shim.pid in the bundle whose start began the server (the server's pid),
      // none in the bundles of containers that joined it. Shared mode starts no server: none.
      if (daemon) for (const id of Object.values(ids)) expect(existsSync(join(bundles[id]!, "shim.pid"))).toBe(false);
      else expect(readFileSync(join(bundles[ids.a]!, "shim.pid"), "utf8")).toBe(String(serveProcesses()[0]));
      expect(existsSync(join(bundles[ids.b]!, "shim.pid"))).toBe(false);
      expect(existsSync(join(bundles[ids.c]!, "shim.pid"))).toBe(false);

      // Shutdown while a container is left must not stop the server, not even with now.
      await v2.shutdown({ id: ids.a, now: false });
      await v2.shutdown({ id: ids.a, now: true });
      await Bun.sleep(200);
      if (daemon) expect((await sandboxes()).map((s) => s.containers)).toEqual([1]);
      else expect(serveProcesses().length).toBe(1);
      expect((await v2.state({ id: ids.c, execId: "" })).status).toBe(Status.RUNNING);

      const wc = v2.wait({ id: ids.c, execId: "" });
      await v2.kill({ id: ids.c, execId: "", signal: 15, all: false });
      expect((await wc).exitStatus).toBe(143);
      await v2.delete({ id: ids.c, execId: "" });

      // Unsupported calls say so.
      const checkpoint = await v2.checkpoint({ id: ids.c, path: "/tmp/x", options: undefined }).catch((e: unknown) => e);
      expect(checkpoint).toBeInstanceOf(TtrpcError);
      expect((checkpoint as TtrpcError).code).toBe(Code.UNIMPLEMENTED);

      // With nothing left, Shutdown ends the server (shared: the sandbox) and removes its socket.
      await v2.shutdown({ id: ids.c, now: false });
      const deadline = Date.now() + 30_000; // liveness only
      const serving = async () => (daemon ? (await sandboxes()).length : serveProcesses().length);
      while ((await serving()) > 0 && Date.now() < deadline) await Bun.sleep(50);
      expect(await serving()).toBe(0);
      expect(existsSync(socketPath(address))).toBe(false);
    },
    T,
  );
});
