// Executor directories of earlier installs are removed, but never one a running process
// still executes from, one that is too young (a container may be between Create and
// Start), or the current one. Every server calls the prune, so with nothing old it does not
// scan /proc, and with something old only one server of the node scans, once per interval.
import { afterAll, expect, test } from "bun:test";
import { existsSync, linkSync, mkdirSync, readdirSync, realpathSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pruneExecutorDirs } from "../../../src/oci/executor-dir.ts";
import { tempDir } from "../../support/tmp.ts";

const root = tempDir();
afterAll(() => root.cleanup());

let n = 0;
/** A fresh state root whose exec/ holds `dirs` (name → age in ms). */
function scene(dirs: Record<string, number>): { stateRoot: string; path: (name: string) => string } {
  const stateRoot = join(root.path, `s${n++}`);
  const path = (name: string) => join(stateRoot, "exec", name);
  for (const [name, ageMs] of Object.entries(dirs)) {
    mkdirSync(path(name), { recursive: true });
    writeFileSync(join(path(name), "placeholder"), "x");
    age(path(name), ageMs);
  }
  return { stateRoot, path };
}

function age(p: string, ms: number): void {
  const t = (Date.now() - ms) / 1000;
  utimesSync(p, t, t);
}

const HOUR = 3_600_000;

test("prunes old, unused executor directories only", async () => {
  const s = scene({ old: HOUR, young: 1000, current: HOUR, busy: HOUR });
  // This test's own runtime binary, hard-linked in: a process runs it.
  linkSync(realpathSync(process.execPath), join(s.path("busy"), "bin"));
  age(s.path("busy"), HOUR);

  const removed = await pruneExecutorDirs(s.stateRoot, [s.path("current")]);
  expect(removed).toEqual([s.path("old")]);
  expect(existsSync(s.path("old"))).toBe(false);
  for (const d of ["young", "current", "busy"]) expect(existsSync(s.path(d))).toBe(true);
  // The lock is released; the stamp says when the scan ran.
  expect(readdirSync(join(s.stateRoot, "exec")).sort()).toEqual([".pruned", "busy", "current", "young"]);
});

test("with nothing old to remove there is no scan (no stamp written) and no lock taken", async () => {
  const s = scene({ current: HOUR, young: 1000 });
  expect(await pruneExecutorDirs(s.stateRoot, [s.path("current")])).toEqual([]);
  expect(readdirSync(join(s.stateRoot, "exec")).sort()).toEqual(["current", "young"]);
  // No exec/ at all (a node that never ran a wasm container): nothing to do.
  expect(await pruneExecutorDirs(join(root.path, "never"), [])).toEqual([]);
});

test("once a server scanned, others skip until the interval has passed", async () => {
  const s = scene({ current: HOUR, old1: HOUR });
  expect(await pruneExecutorDirs(s.stateRoot, [s.path("current")])).toEqual([s.path("old1")]);
  // An earlier install's directory appears again (say, an upgrade): within the interval, left.
  mkdirSync(s.path("old2"));
  age(s.path("old2"), HOUR);
  expect(await pruneExecutorDirs(s.stateRoot, [s.path("current")])).toEqual([]);
  expect(existsSync(s.path("old2"))).toBe(true);
  // The interval over: the next server prunes it.
  age(join(s.stateRoot, "exec", ".pruned"), HOUR);
  expect(await pruneExecutorDirs(s.stateRoot, [s.path("current")])).toEqual([s.path("old2")]);
});

test("while another server holds the lock nobody else scans; a lock left by a dead server is taken over", async () => {
  const s = scene({ current: HOUR, old: HOUR });
  const lock = join(s.stateRoot, "exec", ".prune.lock");
  mkdirSync(lock);
  expect(await pruneExecutorDirs(s.stateRoot, [s.path("current")])).toEqual([]);
  expect(existsSync(s.path("old"))).toBe(true);
  age(lock, HOUR);
  expect(await pruneExecutorDirs(s.stateRoot, [s.path("current")])).toEqual([s.path("old")]);
  expect(existsSync(lock)).toBe(false);
});

test("servers pruning side by side: one scans and removes, the others skip", async () => {
  const s = scene({ current: HOUR, old: HOUR });
  const results = await Promise.all(Array.from({ length: 6 }, () => pruneExecutorDirs(s.stateRoot, [s.path("current")])));
  expect(results.flat()).toEqual([s.path("old")]);
  expect(existsSync(s.path("old"))).toBe(false);
});
