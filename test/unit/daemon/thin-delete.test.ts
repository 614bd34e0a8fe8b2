// The thin shim's `delete` (src/daemon/thin-shim.ts) against a manager on a real ttrpc socket
// (a fake daemon) and a fake runtime: it always answers, with the exit the daemon saw, says
// every failure on stderr, and cleans what is left on the host itself, as normal mode's
// `shim delete` does after a crash.
import { afterAll, afterEach, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DeleteSandboxResponse } from "../../../src/daemon/gen/bunwasi/manager/v1/manager.ts";
import { ManagerDefinition } from "../../../src/daemon/gen/bunwasi/manager/v1/manager.ts";
import { thinDelete } from "../../../src/daemon/thin-shim.ts";
import { parseShimFlags } from "../../../src/runtime-v2/flags.ts";
import { DeleteResponse } from "../../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Server } from "../../../src/ttrpc/index.ts";

const base = mkdtempSync(join(tmpdir(), "bunwasi-thin-delete-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));
const saved = { state: process.env.BUNWASI_STATE_ROOT, runtime: process.env.BUNWASI_RUNTIME };
const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.shutdown(0);
  for (const [k, v] of [
    ["BUNWASI_STATE_ROOT", saved.state],
    ["BUNWASI_RUNTIME", saved.runtime],
  ] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

const NAMES = { daemon: "containerd-wasmtimed", thinShim: "containerd-shim-wasmtimed-v1", runtime: "io.containerd.wasmtimed.v1" };

/** A fake daemon answering deleteSandbox with `answer`; a runtime whose delete fails; container c1's leftovers on the host. */
function scene(name: string, answer: Partial<DeleteSandboxResponse>, asked: string[] = []) {
  const dir = join(base, name);
  const stateRoot = join(dir, "run");
  const bundle = join(dir, "bundle");
  mkdirSync(bundle, { recursive: true });
  process.env.BUNWASI_STATE_ROOT = stateRoot;
  const runtime = join(dir, "runc");
  const log = join(dir, "runc.log");
  writeFileSync(runtime, `#!/bin/sh\necho "$*" >> ${log}\necho "delete: device or resource busy" >&2\nexit 1\n`);
  chmodSync(runtime, 0o755);
  process.env.BUNWASI_RUNTIME = runtime;
  const workDir = join(stateRoot, "state", "ns1", "c1");
  mkdirSync(workDir, { recursive: true });
  mkdirSync(join(stateRoot, "runc", "ns1", "c1"), { recursive: true });
  const socket = join(dir, "daemon.sock");
  const server = new Server();
  server.register(ManagerDefinition, {
    createSandbox: async () => ({ address: "" }),
    deleteSandbox: async (r: { containerId: string }): Promise<DeleteSandboxResponse> => {
      asked.push(r.containerId);
      return { found: false, pid: 0, exitStatus: 0, exitedAtSeconds: 0, exitedAtNanos: 0, cleanupError: "", ...answer };
    },
    listSandboxes: async () => ({ sandboxes: [], modulesCompiled: 0, wasmRunning: 0 }),
  });
  server.listen(socket);
  servers.push(server);
  const flags = parseShimFlags(["-namespace", "ns1", "-address", "/c.sock", "-id", "c1", "-bundle", bundle, "delete"]);
  const warnings: string[] = [];
  const run = () => thinDelete(NAMES, flags, { BUNWASI_DAEMON_SOCKET: socket }, (m) => warnings.push(m));
  return { dir, workDir, warnings, run, runtimeCalls: () => (existsSync(log) ? readFileSync(log, "utf8").trim().split("\n") : []) };
}

test("the daemon could not clean up all of it: the exit it saw is answered, the failure said, the host cleaned here", async () => {
  const s = scene("partial", {
    found: true,
    pid: 4242,
    exitStatus: 3,
    exitedAtSeconds: 1_700_000_000,
    exitedAtNanos: 5,
    cleanupError: "unmount /b/rootfs: device is busy",
  });
  const out = DeleteResponse.decode(await s.run());
  expect(out).toMatchObject({ pid: 4242, exitStatus: 3 });
  expect(Number(out.exitedAt?.seconds)).toBe(1_700_000_000);
  expect(s.warnings[0]).toBe("daemon delete: could not clean up: unmount /b/rootfs: device is busy; cleaning up locally");
  // The local runtime delete failed too: said, and the rest cleaned all the same.
  expect(s.runtimeCalls()).toEqual([expect.stringContaining("delete --force c1")]);
  expect(s.warnings[1]).toStartWith("runtime delete: ");
  expect(s.warnings[1]).toContain("device or resource busy");
  expect(s.warnings).toHaveLength(2);
  expect(existsSync(s.workDir)).toBe(false);
});

test("a container the daemon does not know, with a runtime whose delete fails: answered as killed, cleaned, said", async () => {
  const s = scene("unknown", { found: false });
  const out = DeleteResponse.decode(await s.run());
  expect(out).toMatchObject({ pid: 0, exitStatus: 128 + 9 });
  expect(s.warnings).toHaveLength(1);
  expect(s.warnings[0]).toContain("device or resource busy");
  expect(existsSync(s.workDir)).toBe(false);
});

test("no daemon of the socket's directory lives (a crash): none is asked, the host is cleaned here, the answer is a kill", async () => {
  const asked: string[] = [];
  const s = scene("crashed", { found: true, pid: 1, exitStatus: 0 }, asked);
  // What a SIGKILLed daemon leaves: its own socket, named by its pid, which no process has now.
  const gone = Bun.spawn(["true"]);
  await gone.exited;
  mkdirSync(join(s.dir, "daemons"));
  writeFileSync(join(s.dir, "daemons", `${gone.pid}.sock`), "");
  const out = DeleteResponse.decode(await s.run());
  expect(out).toMatchObject({ pid: 0, exitStatus: 128 + 9 });
  expect(asked).toEqual([]);
  expect(s.warnings[0]).toBe(`daemon delete: no containerd-wasmtimed of ${join(s.dir, "daemon.sock")} lives; cleaning up locally`);
  expect(existsSync(s.workDir)).toBe(false);
});

test("a live daemon in daemons/ is asked, and its answer is the exit", async () => {
  const asked: string[] = [];
  const s = scene("alive", { found: true, pid: 77, exitStatus: 0, exitedAtSeconds: 1_700_000_000 }, asked);
  mkdirSync(join(s.dir, "daemons"));
  writeFileSync(join(s.dir, "daemons", `${process.pid}.sock`), "");
  const out = DeleteResponse.decode(await s.run());
  expect(out).toMatchObject({ pid: 77, exitStatus: 0 });
  expect(asked).toEqual(["c1"]);
});
