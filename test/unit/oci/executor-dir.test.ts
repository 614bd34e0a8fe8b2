// The executor directory holds what the engine asks for (Engine.executor()) beside the
// executor binary and the loader, carries the engine's options, refuses file names that
// would clash, and is built once per set of inputs.
import { afterAll, expect, test } from "bun:test";
import { existsSync, readFileSync, realpathSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import type { Engine } from "../../../src/engines/engine.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { ensureExecutorDir, LOADER_NAME } from "../../../src/oci/executor-dir.ts";
import { tempDir } from "../../support/tmp.ts";

const root = tempDir();
afterAll(() => root.cleanup());

function engineWith(files: { name: string; source: string }[], options?: Record<string, string>): Engine {
  return { ...wasmtime, name: "fake", executor: () => ({ files, ...(options ? { options } : {}) }) };
}

// Bun itself stands in for the shim binary: a dynamically linked executable.
const executor = { path: process.execPath, subcommand: ["executor"] };

test("ships the engine's files, the binary and the loader; once", async () => {
  const data = join(root.path, "engine.dat");
  writeFileSync(data, "engine data");
  const engine = engineWith([{ name: "engine.dat", source: data }], { level: "3" });
  const a = await ensureExecutorDir({ engine, stateRoot: root.path, executor });
  expect(a.engineOptions).toEqual({ level: "3" });
  expect(a.subcommand).toEqual(["executor"]);
  expect(a.files).toContain("engine.dat");
  expect(a.files).toContain(a.binaryName);
  expect(a.files).toContain(LOADER_NAME);
  expect(readFileSync(join(a.dir, "engine.dat"), "utf8")).toBe("engine data");
  expect(existsSync(join(a.dir, ".complete"))).toBe(true);
  const b = await ensureExecutorDir({ engine, stateRoot: root.path, executor });
  expect(b.dir).toBe(a.dir);
});

test("another engine file is another directory", async () => {
  const one = join(root.path, "one.dat");
  const two = join(root.path, "two.dat");
  writeFileSync(one, "1");
  writeFileSync(two, "22");
  const a = await ensureExecutorDir({ engine: engineWith([{ name: "x.dat", source: one }]), stateRoot: root.path, executor });
  const b = await ensureExecutorDir({ engine: engineWith([{ name: "x.dat", source: two }]), stateRoot: root.path, executor });
  expect(a.dir).not.toBe(b.dir);
});

test("file names that would clash or escape are refused", async () => {
  const f = join(root.path, "f");
  writeFileSync(f, "x");
  for (const name of [LOADER_NAME, "../x", ".complete", basename(process.execPath)]) {
    await expect(ensureExecutorDir({ engine: engineWith([{ name, source: f }]), stateRoot: root.path, executor })).rejects.toThrow(
      /cannot ship a file named/,
    );
  }
});

test("a binary of several programs is shipped under the executor's program name, not its file's", async () => {
  const engine = engineWith([]);
  const named = { ...executor, name: "containerd-shim-x-v1" };
  const a = await ensureExecutorDir({ engine, stateRoot: root.path, executor: named });
  expect(a.binaryName).toBe("containerd-shim-x-v1");
  expect(a.files).toContain("containerd-shim-x-v1");
  expect(a.files).not.toContain(basename(process.execPath));
  // The same file (a hard link, or a copy across filesystems).
  const shipped = statSync(join(a.dir, "containerd-shim-x-v1"));
  const real = statSync(realpathSync(process.execPath));
  expect(shipped.ino === real.ino || shipped.size === real.size).toBe(true);
  // The name is part of the directory's identity.
  const b = await ensureExecutorDir({ engine, stateRoot: root.path, executor });
  expect(b.dir).not.toBe(a.dir);
  expect(b.binaryName).toBe(basename(process.execPath));
});
