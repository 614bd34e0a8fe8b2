// The files of the daemons of one socket directory across a hand-over (src/daemon/generations.ts):
// each names its daemon's pid; at start a daemon removes those of dead daemons (a crash) and of
// daemons from before hand-overs, and leaves a live (draining) daemon's alone; a delete the serving
// daemon cannot do is asked of the draining ones.
import { afterEach, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type DeleteSandboxRequest, ManagerDefinition } from "../../../src/daemon/gen/bunwasi/manager/v1/manager.ts";
import { Generations } from "../../../src/daemon/generations.ts";
import { Server } from "../../../src/ttrpc/index.ts";

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A pid that is no process: one past the kernel's largest, which no process can have. */
function deadPid(): number {
  return Number(readFileSync("/proc/sys/kernel/pid_max", "utf8")) + 1;
}

test("names carry the pid; prepare() removes dead daemons' files and keeps live ones'", async () => {
  dir = mkdtempSync("/tmp/bwg-");
  const g = new Generations(join(dir, "wasmtimed.sock"), 4242);
  expect(g.sandboxSocket("abc")).toBe(join(dir, "sandboxes", "abc.4242.sock"));
  expect(g.ownSocket).toBe(join(dir, "daemons", "4242.sock"));
  mkdirSync(g.sandboxDir, { recursive: true });
  mkdirSync(g.daemonsDir, { recursive: true });
  // A live daemon's (this test's process stands for a draining daemon), a dead one's, an
  // unversioned one (a daemon from before hand-overs), and one of this daemon's own pid (a
  // pid reused after a crash).
  const live = process.pid;
  const dead = deadPid();
  for (const f of [`aa.${live}.sock`, `bb.${dead}.sock`, "cc.sock", "dd.4242.sock"]) writeFileSync(join(g.sandboxDir, f), "");
  for (const f of [`${live}.sock`, `${dead}.sock`]) writeFileSync(join(g.daemonsDir, f), "");
  expect(g.prepare()).toEqual({ removed: 4 });
  expect(readdirSync(g.sandboxDir)).toEqual([`aa.${live}.sock`]);
  expect(readdirSync(g.daemonsDir)).toEqual([`${live}.sock`]);
  expect(g.others()).toEqual([live]);
  // A file at the live daemon's path that accepts nothing is no sandbox of its.
  expect(await g.foreignSandbox("aa")).toBeUndefined();
  expect(existsSync(join(g.sandboxDir, `aa.${live}.sock`))).toBe(true);
});

test("a delete this daemon cannot do is asked of each live draining daemon at its own socket", async () => {
  dir = mkdtempSync("/tmp/bwg-");
  // This test's process stands for the draining daemon (its pid is live); "this" daemon has a
  // pid of its own that no file names.
  const self = new Generations(join(dir, "wasmtimed.sock"), deadPid());
  const drainer = new Generations(join(dir, "wasmtimed.sock"), process.pid);
  self.prepare();
  const asked: string[] = [];
  const server = new Server();
  server.register(ManagerDefinition, {
    deleteSandbox: async (req: DeleteSandboxRequest) => {
      asked.push(req.containerId);
      return { found: req.containerId === "mine", pid: 7, exitStatus: 143, exitedAtSeconds: 1, exitedAtNanos: 2, cleanupError: "" };
    },
  });
  server.listen(drainer.ownSocket);
  try {
    const warnings: string[] = [];
    const r = await self.deleteElsewhere({ containerId: "mine", namespace: "ns", bundle: "" }, (m) => warnings.push(m));
    expect(r).toMatchObject({ found: true, pid: 7, exitStatus: 143 });
    expect(await self.deleteElsewhere({ containerId: "theirs", namespace: "ns", bundle: "" }, (m) => warnings.push(m))).toBeUndefined();
    expect(asked).toEqual(["mine", "theirs"]);
    expect(warnings).toEqual([]);
  } finally {
    await server.shutdown();
  }
  // A drainer gone (its socket refuses): said, not thrown.
  const warnings: string[] = [];
  writeFileSync(drainer.ownSocket, "");
  expect(await self.deleteElsewhere({ containerId: "mine", namespace: "ns", bundle: "" }, (m) => warnings.push(m))).toBeUndefined();
  expect(warnings).toHaveLength(1);
  expect(warnings[0]).toStartWith(`delete of ns/mine: asking daemon ${process.pid}: `);
});
