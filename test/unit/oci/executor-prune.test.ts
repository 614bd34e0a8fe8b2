// Executor directories of earlier installs are removed, but never one a running process
// still executes from, one that is too young (a container may be between Create and
// Start), or the current one.
import { afterAll, expect, test } from "bun:test";
import { existsSync, linkSync, mkdirSync, realpathSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pruneExecutorDirs } from "../../../src/oci/executor-dir.ts";
import { tempDir } from "../../support/tmp.ts";

const root = tempDir();
afterAll(() => root.cleanup());

test("prunes old, unused executor directories only", () => {
  const exec = join(root.path, "exec");
  const dir = (name: string, ageMs: number) => {
    const d = join(exec, name);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, "placeholder"), "x");
    const t = (Date.now() - ageMs) / 1000;
    utimesSync(d, t, t);
    return d;
  };
  const old = dir("old", 3_600_000);
  const young = dir("young", 1000);
  const current = dir("current", 3_600_000);
  // This test's own runtime binary, hard-linked in: a process runs it.
  const busy = dir("busy", 3_600_000);
  linkSync(realpathSync(process.execPath), join(busy, "bin"));
  const t = (Date.now() - 3_600_000) / 1000;
  utimesSync(busy, t, t);

  const removed = pruneExecutorDirs(root.path, [current]);
  expect(removed).toEqual([old]);
  expect(existsSync(old)).toBe(false);
  for (const d of [young, current, busy]) expect(existsSync(d)).toBe(true);
});
