// The files of the daemons of one socket directory across a hand-over (src/daemon/generations.ts):
// each names its daemon's pid; at start a daemon removes those of dead daemons (a crash) and of
// daemons from before hand-overs, and leaves a live (draining) daemon's alone.
import { afterEach, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Generations } from "../../../src/daemon/generations.ts";

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
