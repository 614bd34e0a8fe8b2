// The daemon's compile path (precompile through the compile cache's ensure(), with
// src/daemon/compiles.ts counting over the Engine): a module's key is hashed without holding
// the daemon's event loop (every pod's calls wait on it), and once per Create, not again for
// its compile; concurrent Creates of one module compile it once, and the count says so.
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { countingCompiles } from "../../../src/daemon/compiles.ts";
import { CompileCache, HASH_SLICE } from "../../../src/engines/cache.ts";
import type { Engine } from "../../../src/engines/engine.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import type { Prepared } from "../../../src/oci/bundle.ts";
import { precompile } from "../../../src/oci/precompile.ts";

test("the key of a 16 MiB module is hashed in slices: other work runs meanwhile", async () => {
  const source = new Uint8Array(16 * HASH_SLICE);
  source.set([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
  const { engine } = countingCompiles(wasmtime);
  let turns = 0;
  let hashed = false;
  const tick = () => {
    turns++;
    if (!hashed) setImmediate(tick);
  };
  setImmediate(tick);
  const key = await engine.compiler!.cacheKey(source);
  hashed = true;
  expect(turns).toBeGreaterThanOrEqual(15); // one turn between each two slices at least
  expect(key).toBe(await wasmtime.compiler!.cacheKey(source));
  expect(key).toStartWith(new Bun.CryptoHasher("sha256").update(source).digest("hex"));
});

test("a Create's key and compile hash the module once; concurrent Creates of it compile once, counted once", async () => {
  let hashes = 0;
  let compiles = 0;
  const fake: Engine = {
    ...wasmtime,
    compiler: {
      cacheKey: async (s) => {
        hashes++;
        return CompileCache.keyInSlices(s, "fake", "1", "");
      },
      compile: async (s) => {
        compiles++;
        await Bun.sleep(1);
        return s.slice().reverse();
      },
    },
  };
  const counting = countingCompiles(fake);
  const d = mkdtempSync(join(tmpdir(), "bunwasi-compiles-"));
  const module = join(d, "m.wasm");
  writeFileSync(module, new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
  const cacheDir = join(d, "cache");
  // The daemon's path: each Create's warm-up is a precompile with the counting engine.
  const prepared: Prepared = { runtimeBundle: d, kind: "wasm", module: "/m.wasm", moduleHost: module, spec: {} as Prepared["spec"] };
  const logs: string[] = [];
  await precompile(counting.engine, prepared, cacheDir, (m) => logs.push(m));
  expect(hashes).toBe(1);
  expect(compiles).toBe(1);
  await Promise.all([1, 2, 3].map(() => precompile(counting.engine, prepared, join(d, "cache2"), (m) => logs.push(m))));
  expect(hashes).toBe(4);
  expect(compiles).toBe(2);
  expect(counting.compiled).toBe(2);
  expect(logs).toEqual([]);
  rmSync(d, { recursive: true, force: true });
});
