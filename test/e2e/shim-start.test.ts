// `start` binds the pod's socket itself and hands it to the server it spawns (fd 3), so two
// `start`s racing for one pod end with one server, and a socket file left by a server that
// was killed is replaced rather than trusted. Needs root (the server becomes a subreaper and
// listens under /run/containerd/s).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { socketPath } from "../../src/runtime-v2/address.ts";
import { TaskDefinition as TaskV2 } from "../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Client } from "../../src/ttrpc/index.ts";
import { REPO, type ShimEnv, shimEnv } from "../support/shim-env.ts";

const SHIM = join(REPO, "build/bin/containerd-shim-wasmtime-v1");
const T = 60_000;

describe("start and the pod's socket", () => {
  let env: ShimEnv;

  beforeAll(async () => {
    env = await shimEnv();
  }, T);
  afterAll(async () => {
    await env?.stop();
  }, T);

  function bundle(id: string): string {
    const dir = join(env.dir, "start-bundles", id);
    mkdirSync(join(dir, "rootfs"), { recursive: true });
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ociVersion: "1.0.2", process: { args: ["/x.wasm"], cwd: "/" } }));
    return dir;
  }

  function startProc(id: string, dir: string): Bun.Subprocess<"ignore", "pipe", "pipe"> {
    return Bun.spawn(
      [SHIM, "-namespace", env.cd.namespace, "-address", env.cd.address, "-publish-binary", "/usr/bin/containerd", "-id", id, "start"],
      {
        cwd: dir,
        env: { ...(process.env as Record<string, string>), TTRPC_ADDRESS: env.cd.ttrpcAddress },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      },
    );
  }

  async function startOnce(id: string, dir: string): Promise<string> {
    const p = startProc(id, dir);
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    if (code !== 0) throw new Error(`start ${id} exited ${code}: ${err}`);
    return out;
  }

  function serversOf(address: string): number[] {
    const out: number[] = [];
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const cmd = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0");
        if (cmd.includes("serve") && cmd.includes(address)) out.push(Number(d));
      } catch {
        // gone between readdir and read
      }
    }
    return out;
  }

  /**
   * The servers of an address once one has exec'd: `start` may exit before the server it
   * spawned has (Bun's spawn returns before the child's exec), so /proc can show it a little
   * after `start` is done. Polled, with a deadline that only bounds a failure.
   */
  async function serversOnceStarted(address: string): Promise<number[]> {
    const deadline = Date.now() + 10_000;
    while (serversOf(address).length === 0 && Date.now() < deadline) await Bun.sleep(10);
    return serversOf(address);
  }

  async function shutdown(address: string): Promise<void> {
    const client = await Client.connect(socketPath(address));
    try {
      await client.service(TaskV2).shutdown({ id: "", now: false });
    } finally {
      client.close();
    }
    while (serversOf(address).length > 0) await Bun.sleep(20);
  }

  test(
    "eight concurrent starts for one container: one address, one server, which answers",
    async () => {
      const id = `race-${process.pid}`;
      const dir = bundle(id);
      const replies = await Promise.all(Array.from({ length: 8 }, () => startOnce(id, dir)));
      const address = replies[0]!;
      expect(address).toMatch(/^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
      expect(new Set(replies)).toEqual(new Set([address]));
      const servers = await serversOnceStarted(address);
      expect(servers.length).toBe(1);
      const client = await Client.connect(socketPath(address));
      const connect = await client.service(TaskV2).connect({ id });
      client.close();
      expect(connect.shimPid).toBe(servers[0]!);
      await shutdown(address);
      // The server removes the socket file it was handed when it exits.
      expect(existsSync(socketPath(address))).toBe(false);
    },
    T,
  );

  test(
    "a socket file left by a killed server is replaced by a new server",
    async () => {
      const id = `stale-${process.pid}`;
      const dir = bundle(id);
      const address = await startOnce(id, dir);
      const [first] = await serversOnceStarted(address);
      expect(first).toBeGreaterThan(0);
      process.kill(first!, "SIGKILL");
      while (serversOf(address).length > 0) await Bun.sleep(20);
      expect(existsSync(socketPath(address))).toBe(true); // nobody removed it

      expect(await startOnce(id, dir)).toBe(address);
      const now = await serversOnceStarted(address);
      expect(now.length).toBe(1);
      expect(now[0]).not.toBe(first);
      await shutdown(address);
    },
    T,
  );

  test(
    "start outside a bundle is refused and leaves no address file behind",
    async () => {
      const dir = join(env.dir, "not-a-bundle");
      mkdirSync(dir, { recursive: true });
      const p = startProc(`nob-${process.pid}`, dir);
      const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
      expect(code).not.toBe(0);
      expect(err).toContain("is not a bundle (no config.json)");
      expect(existsSync(join(dir, "address"))).toBe(false);
    },
    T,
  );
});
