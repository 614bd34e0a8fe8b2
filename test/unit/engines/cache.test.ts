import { expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { type CheckedEntry, CompileCache, HASH_SLICE } from "../../../src/engines/cache.ts";
import type { Compiler } from "../../../src/engines/engine.ts";
import { tmp } from "./helpers.ts";

/** The bytes of `key`'s entry if it checks (its file closed again), else undefined. */
async function read(c: CompileCache, key: string): Promise<Uint8Array | undefined> {
  const { entry } = await c.check(key, { read: true });
  entry?.close();
  return entry?.bytes;
}
const names = (dir: string) => readdirSync(dir).sort();

/** check() of `key` in a process of its own (which reads the node key afresh): the bytes, or why not. */
function checkElsewhere(dir: string, key: string): { bytes?: number[]; rejected?: string; error?: string } {
  const r = Bun.spawnSync(
    [
      process.execPath,
      "-e",
      `import { CompileCache } from ${JSON.stringify(join(import.meta.dir, "../../../src/engines/cache.ts"))};
       try {
         const { entry, rejected } = await new CompileCache({ dir: process.argv[1] }).check(process.argv[2], { read: true });
         console.log(JSON.stringify(entry ? { bytes: Array.from(entry.bytes) } : { rejected }));
       } catch (e) {
         console.log(JSON.stringify({ error: e.message }));
       }`,
      dir,
      key,
    ],
    { stderr: "pipe" },
  );
  return JSON.parse(r.stdout.toString());
}

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

test("put/check round trip: the artifact and its MAC; a miss is nothing; bad keys rejected", async () => {
  const c = new CompileCache({ dir: tmp() });
  expect(await c.check("nope")).toEqual({});
  await c.put("k1", new Uint8Array([1, 2, 3]));
  const { entry } = await c.check("k1");
  expect(entry).toMatchObject({ key: "k1", file: join(c.dir, "k1.cwasm"), mac: await c.mac("k1", new Uint8Array([1, 2, 3])) });
  // The checked file through its open fd: the bytes that were checked.
  expect(Array.from(readFileSync(entry?.fdPath as string))).toEqual([1, 2, 3]);
  entry?.close();
  expect(Array.from((await read(c, "k1")) ?? [])).toEqual([1, 2, 3]);
  expect(names(c.dir)).toEqual(["k1.cwasm", "k1.mac"]);
  // The artifact is readable by a container's user through its bind; the MAC and directory are not.
  expect(statSync(join(c.dir, "k1.cwasm")).mode & 0o777).toBe(0o644);
  expect(statSync(join(c.dir, "k1.mac")).mode & 0o777).toBe(0o600);
  expect(statSync(c.dir).mode & 0o777).toBe(0o700);
  await expect(c.put("../evil", new Uint8Array(1))).rejects.toThrow("bad cache key");
});

test("the node key: made on first use (32 bytes, 0600, beside the cache), one key for every cache of that file", async () => {
  const dir = join(tmp(), "cache");
  const c = new CompileCache({ dir });
  expect(c.keyFile).toBe(`${dir}.key`);
  expect(existsSync(`${dir}.key`)).toBe(false);
  await c.put("k", new Uint8Array([5]));
  const st = statSync(`${dir}.key`);
  expect({ size: st.size, mode: st.mode & 0o777, uid: st.uid }).toEqual({ size: 32, mode: 0o600, uid: process.getuid?.() ?? 0 });
  // Another process's cache of the same key file checks what this one wrote.
  expect(checkElsewhere(dir, "k")).toEqual({ bytes: [5] });
  // Another key (a new install, a stolen entry moved to another node): nothing checks.
  const elsewhere = new CompileCache({ dir, keyFile: join(tmp(), "other.key") });
  expect(await elsewhere.check("k")).toEqual({ rejected: "its MAC does not verify" });
});

test("the node key made by several processes at once: one key, which every one of them signed with", async () => {
  const dir = join(tmp(), "cache");
  const script = `
    import { CompileCache } from ${JSON.stringify(join(import.meta.dir, "../../../src/engines/cache.ts"))};
    await new CompileCache({ dir: process.argv[2] }).put("k" + process.argv[3], new Uint8Array([Number(process.argv[3])]));
  `;
  const file = join(tmp(), "maker.ts");
  writeFileSync(file, script);
  const procs = Array.from({ length: 6 }, (_, i) => Bun.spawn([process.execPath, file, dir, String(i)], { stderr: "inherit" }));
  for (const p of procs) expect(await p.exited).toBe(0);
  expect(readdirSync(join(dir, "..")).filter((n) => n.startsWith("cache.key"))).toEqual(["cache.key"]);
  for (let i = 0; i < 6; i++) expect(checkElsewhere(dir, `k${i}`)).toEqual({ bytes: [i] });
});

test("the node key file is refused when others may read it, or it is not ours, not a file or the wrong size", async () => {
  const cases: [string, (f: string) => void, string][] = [
    ["readable by others", (f) => chmodSync(f, 0o644), "others may read it"],
    ["another owner", (f) => chownSync(f, 65534, 65534), "owned by uid 65534"],
    ["short", (f) => writeFileSync(f, new Uint8Array(8), { mode: 0o600 }), "is 8 bytes, not 32"],
    [
      "a symbolic link",
      (f) => {
        const real = `${f}.real`;
        renameSync(f, real);
        symlinkSync(real, f);
      },
      "ELOOP",
    ],
  ];
  for (const [what, spoil, message] of cases) {
    const dir = join(tmp(), "cache");
    const made = new CompileCache({ dir });
    await made.put("k", new Uint8Array([1]));
    spoil(`${dir}.key`);
    // In a process that reads the key afresh (a key is read once per process and file).
    const got = checkElsewhere(dir, "k");
    expect({ what, refused: got.error?.includes(message) }).toEqual({ what, refused: true });
  }
});

test("check refuses an entry whose bytes changed, whose MAC is missing, or someone else could have changed", async () => {
  const spoilers: [string, (dir: string) => void, string][] = [
    ["bytes changed in place", (d) => writeFileSync(join(d, "k.cwasm"), new Uint8Array([1, 2, 4])), "its MAC does not verify"],
    ["another entry's artifact", (d) => writeFileSync(join(d, "k.cwasm"), readFileSync(join(d, "other.cwasm"))), "its MAC does not verify"],
    [
      "another entry's artifact and MAC",
      (d) => {
        writeFileSync(join(d, "k.cwasm"), readFileSync(join(d, "other.cwasm")));
        writeFileSync(join(d, "k.mac"), readFileSync(join(d, "other.mac")));
      },
      "its MAC does not verify",
    ],
    ["no MAC", (d) => Bun.spawnSync(["rm", join(d, "k.mac")]), "it has no MAC"],
    ["another owner", (d) => chownSync(join(d, "k.cwasm"), 65534, 65534), "owned by uid 65534"],
    ["writable by others", (d) => chmodSync(join(d, "k.cwasm"), 0o666), "mode 666"],
    ["writable by the group", (d) => chmodSync(join(d, "k.cwasm"), 0o664), "mode 664"],
    [
      "a symbolic link to a good artifact",
      (d) => {
        renameSync(join(d, "k.cwasm"), join(d, "real"));
        symlinkSync(join(d, "real"), join(d, "k.cwasm"));
      },
      "it is a symbolic link",
    ],
    [
      "not a regular file",
      (d) => {
        renameSync(join(d, "k.cwasm"), join(d, "gone"));
        mkdirSync(join(d, "k.cwasm"));
      },
      "not a regular file",
    ],
  ];
  for (const [what, spoil, why] of spoilers) {
    const c = new CompileCache({ dir: tmp() });
    await c.put("k", new Uint8Array([1, 2, 3]));
    await c.put("other", new Uint8Array([9, 9, 9, 9]));
    spoil(c.dir);
    expect({ what, checked: await c.check("k") }).toEqual({ what, checked: { rejected: why } });
  }
});

test("check refuses a cache directory that is not ours; one of ours with another mode is made 0700 once", async () => {
  const c = new CompileCache({ dir: tmp() });
  await c.put("k", new Uint8Array([1]));
  chmodSync(c.dir, 0o755);
  // A fresh cache of the directory (an older install's 0755): taken in hand.
  const fresh = new CompileCache({ dir: c.dir });
  expect((await fresh.check("k")).entry).toBeDefined();
  expect(statSync(c.dir).mode & 0o777).toBe(0o700);
  // Opened again by someone since: no longer trusted.
  chmodSync(c.dir, 0o777);
  expect(await fresh.check("k")).toEqual({ rejected: `the cache directory ${c.dir} has mode 777` });
  chmodSync(c.dir, 0o700);
  chownSync(c.dir, 65534, 65534);
  expect(await new CompileCache({ dir: c.dir }).check("k")).toEqual({ rejected: `the cache directory ${c.dir} is owned by uid 65534` });
});

test("ensure: an entry that does not check is compiled again and replaced; why is in the answer", async () => {
  const c = new CompileCache({ dir: tmp() });
  const { compiler, n } = counting();
  const first = await c.ensure(compiler, MODULE);
  writeFileSync(first.file, new Uint8Array([7, 7, 7]));
  const again = await c.ensure(compiler, MODULE);
  expect(again).toEqual({ key: first.key, from: "compiled", file: first.file, rejected: "its MAC does not verify", published: undefined });
  expect(await read(c, first.key)).toEqual(MODULE.slice().reverse());
  expect(n.compiles).toBe(2);
  chownSync(first.file, 65534, 65534);
  expect((await c.ensure(compiler, MODULE)).rejected).toBe("owned by uid 65534");
  expect(statSync(first.file).uid).toBe(0);
  expect((await c.ensure(compiler, MODULE)).from).toBe("cache");
  expect(n.compiles).toBe(3);
});

test("check's fd path maps the checked file, whatever is renamed over the entry's name afterwards", async () => {
  const c = new CompileCache({ dir: tmp() });
  await c.put("k", new Uint8Array([1, 1, 1]));
  const { entry } = await c.check("k");
  writeFileSync(join(c.dir, "swap"), new Uint8Array([6, 6, 6]), { mode: 0o644 });
  renameSync(join(c.dir, "swap"), join(c.dir, "k.cwasm"));
  expect(Array.from(readFileSync((entry as CheckedEntry).fdPath))).toEqual([1, 1, 1]);
  (entry as CheckedEntry).close();
});

test("a cache without a key (layers checked by digest): get and put, no MACs, and nothing in it is checked as code", async () => {
  const c = new CompileCache({ dir: tmp(), keyFile: null });
  expect(c.get("l")).toBeUndefined();
  await c.put("l", new Uint8Array([4, 2]));
  expect(Array.from(c.get("l") ?? [])).toEqual([4, 2]);
  expect(names(c.dir)).toEqual(["l.cwasm"]);
  await expect(c.check("l")).rejects.toThrow("has no key");
  expect(() => new CompileCache({ dir: c.dir }).get("l")).toThrow("read it with check()");
});

test("a check hashes in slices: the event loop turns while a large artifact is checked", async () => {
  const c = new CompileCache({ dir: tmp() });
  await c.put("big", new Uint8Array(5 * HASH_SLICE).fill(1));
  let turns = 0;
  let done = false;
  const count = () => {
    turns++;
    if (!done) setImmediate(count);
  };
  setImmediate(count);
  const { entry } = await c.check("big");
  done = true;
  entry?.close();
  expect(entry).toBeDefined();
  expect(turns).toBeGreaterThanOrEqual(4);
});

test("put does not write on the calling thread: it returns before the artifact is in place", async () => {
  const c = new CompileCache({ dir: join(tmp(), "made-on-first-put") });
  const bytes = new Uint8Array(8 << 20).fill(3);
  const written = c.put("big", bytes);
  // A synchronous write would have the file (and the directory) by now.
  expect(existsSync(join(c.dir, "big.cwasm"))).toBe(false);
  await written;
  expect(statSync(join(c.dir, "big.cwasm")).size).toBe(8 << 20);
  expect(names(c.dir)).toEqual(["big.cwasm", "big.mac"]);
});

test("concurrent writers of one key in one process: one whole artifact of one writer with its MAC, no tmp files", async () => {
  const c = new CompileCache({ dir: tmp() });
  const versions = Array.from({ length: 12 }, (_, i) => new Uint8Array((1 << 20) + i).fill(i));
  await Promise.all(versions.map((v) => c.put("same", v)));
  const got = await read(c, "same");
  expect(got).toBeDefined();
  const i = got![0]!;
  expect(got!.length).toBe((1 << 20) + i);
  expect(got!.every((b) => b === i)).toBe(true);
  expect(names(c.dir)).toEqual(["same.cwasm", "same.mac"]);
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
  (await c.check("a")).entry?.close(); // a hit refreshes a
  await c.put("d", kb);
  expect(await c.size()).toBeLessThanOrEqual(3000);
  expect(await read(c, "b")).toBeUndefined();
  expect(await read(c, "a")).toBeDefined();
  expect(await read(c, "d")).toBeDefined();
  // An entry goes whole: its MAC with it.
  expect(names(dir)).toEqual(["a.cwasm", "a.mac", "c.cwasm", "c.mac", "d.cwasm", "d.mac"]);
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
  const orphan = join(dir, "gone.mac");
  writeFileSync(orphan, "ab");
  utimesSync(orphan, old, old);
  await c.put("k", new Uint8Array(1));
  expect(names(dir)).toEqual(["k.cwasm", "k.mac", "y.cwasm.tmp-2-live"]);
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
        const { entry, rejected } = await r.check("same", { read: true });
        entry?.close();
        if ((entry && entry.bytes?.length !== 4 << 20) || rejected) partial++;
        await Bun.sleep(1);
      }
    })(),
  );
  for (const p of procs) expect(await p.exited).toBe(0);
  await Promise.all(readers);
  expect(partial).toBe(0);
  expect(names(dir)).toEqual(["same.cwasm", "same.mac"]);
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
  const key = CompileCache.key(MODULE, "fake", "1", "");
  expect(first).toEqual({ key, from: "compiled", file: join(c.dir, `${key}.cwasm`), published: undefined });
  expect(await read(c, first.key)).toEqual(MODULE.slice().reverse());
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
  expect(names(dir)).toEqual([`${all[0]?.key}.cwasm`, `${all[0]?.key}.mac`]);
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
  expect(all).toEqual(Array(3).fill({ key, from: "fetched", file: join(c.dir, `${key}.cwasm`), published: `fetched:${key.slice(0, 4)}` }));
  expect(await read(c, key)).toEqual(stored);
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
