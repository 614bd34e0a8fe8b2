import { expect, test } from "bun:test";
import { readdirSync, utimesSync } from "node:fs";
import { join } from "node:path";
import { CompileCache } from "../../../src/engines/cache.ts";
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

test("put/get round trip; miss is undefined; bad keys rejected", () => {
  const c = new CompileCache({ dir: tmp() });
  expect(c.get("nope")).toBeUndefined();
  c.put("k1", new Uint8Array([1, 2, 3]));
  expect(Array.from(c.get("k1") ?? [])).toEqual([1, 2, 3]);
  expect(() => c.put("../evil", new Uint8Array(1))).toThrow();
});

test("total size is bounded: oldest entries are evicted, recently used survive", () => {
  const dir = tmp();
  const c = new CompileCache({ dir, maxBytes: 3000 });
  const kb = new Uint8Array(1000);
  c.put("a", kb);
  c.put("b", kb);
  c.put("c", kb);
  const old = new Date(Date.now() - 60_000);
  utimesSync(join(dir, "a.cwasm"), old, old);
  utimesSync(join(dir, "b.cwasm"), new Date(Date.now() - 30_000), new Date(Date.now() - 30_000));
  c.get("a"); // a hit refreshes a
  c.put("d", kb);
  expect(c.size()).toBeLessThanOrEqual(3000);
  expect(c.get("b")).toBeUndefined();
  expect(c.get("a")).toBeDefined();
  expect(c.get("d")).toBeDefined();
});

test("concurrent writers from separate processes: one whole entry, no tmp files", async () => {
  const dir = tmp();
  const script = `
    import { CompileCache } from ${JSON.stringify(join(import.meta.dir, "../../../src/engines/cache.ts"))};
    const c = new CompileCache({ dir: process.argv[2] });
    const bytes = new Uint8Array(4 << 20).fill(7);
    for (let i = 0; i < 20; i++) c.put("same", bytes);
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
