import { expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CompileCache, HASH_SLICE } from "../../../src/engines/cache.ts";
import type { Compiler } from "../../../src/engines/engine.ts";
import { mount } from "../../../src/linux/libc.ts";
import { MS, unmountAll } from "../../../src/oci/rootfs.ts";
import { tmp } from "./helpers.ts";

test("key depends on bytes, engine, version and flags", () => {
  const a = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
  const b = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 1]);
  const k = CompileCache.key(a, "wasmtime", "48.0.0", "epoch=1");
  expect(k).toMatch(/^[0-9a-f]{64}-wasmtime-[0-9a-f]{16}$/);
  expect(CompileCache.key(a, "wasmtime", "48.0.0", "epoch=1")).toBe(k);
  for (const other of [
    CompileCache.key(b, "wasmtime", "48.0.0", "epoch=1"),
    CompileCache.key(a, "other", "48.0.0", "epoch=1"),
    CompileCache.key(a, "wasmtime", "49.0.0", "epoch=1"),
    CompileCache.key(a, "wasmtime", "48.0.0", "epoch=0"),
  ]) {
    expect(other).not.toBe(k);
  }
});

test("keyInSlices: the same key, with a turn of the event loop between slices", async () => {
  const big = new Uint8Array(5 * HASH_SLICE + 123);
  for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff;
  const order: string[] = [];
  let turns = 0;
  const count = () => {
    turns++;
    if (order.length === 0) setImmediate(count);
  };
  setImmediate(count);
  const key = await CompileCache.keyInSlices(big, "wasmtime", "48.0.0", "epoch=1").finally(() => order.push("hashed"));
  expect(key).toBe(CompileCache.key(big, "wasmtime", "48.0.0", "epoch=1"));
  // Six slices: the loop turned between each (a hash in one go would let none through).
  expect(turns).toBeGreaterThanOrEqual(5);
  const small = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
  expect(await CompileCache.keyInSlices(small, "x", "1", "")).toBe(CompileCache.key(small, "x", "1", ""));
});

test("put/get round trip; miss is undefined; bad keys rejected", async () => {
  const c = new CompileCache({ dir: tmp() });
  expect(c.get("nope")).toBeUndefined();
  expect(c.hitPath("nope")).toBeUndefined();
  expect(await c.has("k1")).toBe(false);
  await c.put("k1", new Uint8Array([1, 2, 3]));
  expect(await c.has("k1")).toBe(true);
  expect(Array.from(c.get("k1") ?? [])).toEqual([1, 2, 3]);
  expect(c.hitPath("k1")).toBe(join(c.dir, "k1.cwasm"));
  await expect(c.put("../evil", new Uint8Array(1))).rejects.toThrow("bad cache key");
});

test("put does not write on the calling thread: it returns before the artifact is in place", async () => {
  const c = new CompileCache({ dir: join(tmp(), "made-on-first-put") });
  const bytes = new Uint8Array(8 << 20).fill(3);
  const written = c.put("big", bytes);
  // A synchronous write would have the file (and the directory) by now.
  expect(existsSync(join(c.dir, "big.cwasm"))).toBe(false);
  await written;
  expect(statSync(join(c.dir, "big.cwasm")).size).toBe(8 << 20);
  expect(readdirSync(c.dir)).toEqual(["big.cwasm"]);
});

test("concurrent writers of one key in one process: one whole artifact of one writer, no tmp files", async () => {
  const c = new CompileCache({ dir: tmp() });
  const versions = Array.from({ length: 12 }, (_, i) => new Uint8Array((1 << 20) + i).fill(i));
  await Promise.all(versions.map((v) => c.put("same", v)));
  const got = c.get("same");
  expect(got).toBeDefined();
  const i = got![0]!;
  expect(got!.length).toBe((1 << 20) + i);
  expect(got!.every((b) => b === i)).toBe(true);
  expect(readdirSync(c.dir)).toEqual(["same.cwasm"]);
});

test("a failed write leaves no tmp file and says why", async () => {
  const dir = tmp();
  const c = new CompileCache({ dir });
  // The artifact's name taken by a directory: the rename fails after the tmp file was written.
  mkdirSync(join(dir, "k.cwasm"));
  writeFileSync(join(dir, "k.cwasm", "x"), "");
  await expect(c.put("k", new Uint8Array(10))).rejects.toThrow();
  expect(readdirSync(dir)).toEqual(["k.cwasm"]);
});

test("total size is bounded: oldest entries are evicted, recently used survive", async () => {
  const dir = tmp();
  const c = new CompileCache({ dir, maxBytes: 3000 });
  const kb = new Uint8Array(1000);
  await c.put("a", kb);
  await c.put("b", kb);
  await c.put("c", kb);
  const old = new Date(Date.now() - 60_000);
  utimesSync(join(dir, "a.cwasm"), old, old);
  utimesSync(join(dir, "b.cwasm"), new Date(Date.now() - 30_000), new Date(Date.now() - 30_000));
  c.get("a"); // a hit refreshes a
  await c.put("d", kb);
  expect(await c.size()).toBeLessThanOrEqual(3000);
  expect(c.get("b")).toBeUndefined();
  expect(c.get("a")).toBeDefined();
  expect(c.get("d")).toBeDefined();
});

test("stale tmp files of a writer that died are removed by the next write's eviction", async () => {
  const dir = tmp();
  const c = new CompileCache({ dir });
  const stale = join(dir, "x.cwasm.tmp-1-dead");
  writeFileSync(stale, "half");
  const old = new Date(Date.now() - 11 * 60_000);
  utimesSync(stale, old, old);
  const fresh = join(dir, "y.cwasm.tmp-2-live");
  writeFileSync(fresh, "being written");
  await c.put("k", new Uint8Array(1));
  expect(readdirSync(dir).sort()).toEqual(["k.cwasm", "y.cwasm.tmp-2-live"]);
});

test("hitPath in a read-only cache (the executor's mount): a hit is the path, a miss undefined (root)", () => {
  expect(process.getuid?.()).toBe(0);
  const dir = tmp();
  writeFileSync(join(dir, "k.cwasm"), "artifact");
  const ro = join(tmp(), "ro");
  mkdirSync(ro);
  const bind = (flags: number) => {
    const [rc, e] = mount(dir, ro, null, flags, null);
    if (rc !== 0) throw new Error(`mount: errno ${e}`);
  };
  bind(MS.BIND);
  try {
    bind(MS.BIND | MS.REMOUNT | MS.RDONLY);
    const c = new CompileCache({ dir: ro });
    expect(c.hitPath("k")).toBe(join(ro, "k.cwasm"));
    expect(c.hitPath("missing")).toBeUndefined();
  } finally {
    unmountAll(ro);
  }
});

test("concurrent writers from separate processes: one whole entry, no tmp files", async () => {
  const dir = tmp();
  const script = `
    import { CompileCache } from ${JSON.stringify(join(import.meta.dir, "../../../src/engines/cache.ts"))};
    const c = new CompileCache({ dir: process.argv[2] });
    const bytes = new Uint8Array(4 << 20).fill(7);
    for (let i = 0; i < 20; i++) await c.put("same", bytes);
  `;
  const file = join(tmp(), "writer.ts");
  await Bun.write(file, script);
  const readers: Promise<void>[] = [];
  const procs = Array.from({ length: 4 }, () => Bun.spawn([process.execPath, file, dir], { stderr: "inherit" }));
  let partial = 0;
  readers.push(
    (async () => {
      const r = new CompileCache({ dir });
      while (procs.some((p) => p.exitCode === null)) {
        const got = r.get("same");
        if (got && got.length !== 4 << 20) partial++;
        await Bun.sleep(1);
      }
    })(),
  );
  for (const p of procs) expect(await p.exited).toBe(0);
  await Promise.all(readers);
  expect(partial).toBe(0);
  expect(readdirSync(dir)).toEqual(["same.cwasm"]);
});

/** A compiler that reverses the bytes, counting keys and compiles; a source ending in 0xff does not compile. */
function counting(delayMs = 0) {
  const n = { keys: 0, compiles: 0 };
  const compiler: Compiler = {
    cacheKey: async (s) => {
      n.keys++;
      return CompileCache.key(s, "fake", "1", "");
    },
    compile: async (s) => {
      n.compiles++;
      if (delayMs) await Bun.sleep(delayMs);
      if (s.at(-1) === 0xff) throw new Error("bad section");
      return s.slice().reverse();
    },
  };
  return { compiler, n };
}
const MODULE = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);

test("ensure: a miss compiles and writes, a hit does neither; the key is hashed once per call", async () => {
  const c = new CompileCache({ dir: tmp() });
  const { compiler, n } = counting();
  const first = await c.ensure(compiler, MODULE);
  expect(first).toEqual({ key: CompileCache.key(MODULE, "fake", "1", ""), from: "compiled", published: undefined });
  expect(c.get(first.key)).toEqual(MODULE.slice().reverse());
  expect(await c.ensure(compiler, MODULE)).toMatchObject({ key: first.key, from: "cache" });
  expect(n).toEqual({ keys: 2, compiles: 1 });
});

test("ensure: callers of one key while it compiles share one compile and one write, also from two caches of one directory", async () => {
  const dir = tmp();
  const { compiler, n } = counting(20);
  const puts: string[] = [];
  const caches = [new CompileCache({ dir }), new CompileCache({ dir })].map((c) => {
    const put = c.put.bind(c);
    c.put = (key, bytes) => {
      puts.push(key);
      return put(key, bytes);
    };
    return c;
  });
  const all = await Promise.all(Array.from({ length: 6 }, (_, i) => (caches[i % 2] as CompileCache).ensure(compiler, MODULE)));
  expect(all.map((r) => r.from)).toEqual(Array(6).fill("compiled"));
  expect(n.compiles).toBe(1);
  expect(puts.length).toBe(1);
  expect(readdirSync(dir)).toEqual([`${all[0]?.key}.cwasm`]);
});

test("ensure: fetch is asked on a miss only, before compiling; publish runs once per shared ensure, with its result for all", async () => {
  const c = new CompileCache({ dir: tmp() });
  const { compiler, n } = counting(20);
  const fetched: string[] = [];
  const published: string[] = [];
  const o = (bytes: Uint8Array | undefined) => ({
    fetch: async (key: string) => {
      fetched.push(key);
      return bytes;
    },
    publish: async (key: string, from: string) => {
      published.push(from);
      return `${from}:${key.slice(0, 4)}`;
    },
  });
  const stored = new Uint8Array([9, 9]);
  const all = await Promise.all([1, 2, 3].map(() => c.ensure(compiler, MODULE, o(stored))));
  const key = CompileCache.key(MODULE, "fake", "1", "");
  expect(all).toEqual(Array(3).fill({ key, from: "fetched", published: `fetched:${key.slice(0, 4)}` }));
  expect(c.get(key)).toEqual(stored);
  expect(fetched).toEqual([key]);
  expect(published).toEqual(["fetched"]);
  expect(await c.ensure(compiler, MODULE, o(stored))).toMatchObject({ from: "cache", published: `cache:${key.slice(0, 4)}` });
  expect(fetched).toEqual([key]); // a hit asks nothing of fetch
  expect(n.compiles).toBe(0);
  // Nothing to fetch: compiled.
  const other = new CompileCache({ dir: tmp() });
  expect(await other.ensure(compiler, MODULE, o(undefined))).toMatchObject({ from: "compiled" });
  expect(n.compiles).toBe(1);
});

test("ensure: scopes share the compile but not each other's publish", async () => {
  const c = new CompileCache({ dir: tmp() });
  const { compiler, n } = counting(20);
  const published: string[] = [];
  const scoped = (scope: string) => c.ensure(compiler, MODULE, { scope, publish: async () => void published.push(scope) });
  const all = await Promise.all([scoped("a"), scoped("b"), scoped("a")]);
  expect(all.map((r) => r.from)).toEqual(["compiled", "compiled", "compiled"]);
  expect(n.compiles).toBe(1);
  expect(published.sort()).toEqual(["a", "b"]);
});

test("ensure: a compile error rejects every caller that shared it, writes nothing, and the next ensure tries again", async () => {
  const c = new CompileCache({ dir: tmp() });
  const { compiler, n } = counting(20);
  const bad = new Uint8Array([...MODULE, 0xff]);
  const all = await Promise.allSettled([1, 2].map(() => c.ensure(compiler, bad)));
  expect(all.map((r) => r.status)).toEqual(["rejected", "rejected"]);
  expect(String((all[0] as PromiseRejectedResult).reason)).toContain("bad section");
  expect(n.compiles).toBe(1);
  expect(existsSync(c.dir) ? readdirSync(c.dir) : []).toEqual([]);
  await expect(c.ensure(compiler, bad)).rejects.toThrow("bad section");
  expect(n.compiles).toBe(2);
});
