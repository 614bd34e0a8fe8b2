// The daemon's compile path (src/daemon/compiles.ts over the wasmtime Engine): a module's key
// is hashed without holding the daemon's event loop (every pod's calls wait on it), and once
// per Create, not again for its compile; concurrent compiles of one module are one.
import { expect, test } from "bun:test";
import { countingCompiles } from "../../../src/daemon/compiles.ts";
import { CompileCache, HASH_SLICE } from "../../../src/engines/cache.ts";
import type { Engine } from "../../../src/engines/engine.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";

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

test("a Create's key and compile hash the module once; concurrent compiles of it are one", async () => {
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
  const source = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
  await counting.engine.compiler!.cacheKey(source);
  const out = await Promise.all([counting.engine.compiler!.compile(source), counting.engine.compiler!.compile(source)]);
  expect(out).toEqual([source.slice().reverse(), source.slice().reverse()]);
  expect(hashes).toBe(1);
  expect(compiles).toBe(1);
  expect(counting.compiled).toBe(1);
});
