// What a compile-cache hit costs now that an entry is checked before it is loaded
// (docs/ARCHITECTURE.md, "Compiled code we trust"): CompileCache.check() of an artifact of a
// few sizes (open, fstat, an HMAC-SHA256 over its bytes read from the page cache in 256 KiB
// reads, the MAC file), against what a hit cost before (one access(2)) and against a plain
// sha256 of the same bytes in memory. The longest stall of the event loop is what other pods'
// calls would wait (a 1 ms timer stands in for them).
//
//   bun bench/compile-cache/check.ts [--runs 31] [--sizes 0.15,1,4,16]   (sizes in MiB; 0.15: the demo's artifact)

import { accessSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { CompileCache } from "../../src/engines/cache.ts";

const { values } = parseArgs({
  options: { runs: { type: "string", default: "31" }, sizes: { type: "string", default: "0.15,1,4,16" } },
});
const runs = Number(values.runs);
const sizes = values.sizes.split(",").map(Number);
const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function measure(op: () => unknown): Promise<{ total: number; stall: number }> {
  let last = performance.now();
  let stall = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    stall = Math.max(stall, now - last);
    last = now;
  }, 1);
  await Bun.sleep(5);
  last = performance.now();
  const t = performance.now();
  await op();
  const total = performance.now() - t;
  await Bun.sleep(3);
  clearInterval(timer);
  return { total, stall };
}

const dir = mkdtempSync(join(tmpdir(), "bunwasi-check-bench-"));
try {
  const cache = new CompileCache({ dir: join(dir, "cache") });
  console.log(`| artifact | check() ms | check() longest stall ms | sha256 in memory ms | access(2) ms (the hit before) |`);
  console.log("|---:|---:|---:|---:|---:|");
  for (const mib of sizes) {
    const bytes = new Uint8Array(Math.round(mib * (1 << 20)));
    for (let i = 0; i < bytes.length; i += 64) bytes[i] = (i * 31) & 0xff;
    const key = `bench-${mib}`;
    await cache.put(key, bytes);
    (await cache.check(key)).entry?.close(); // the page cache is warm, the key read
    const checks: { total: number; stall: number }[] = [];
    const shas: number[] = [];
    const accesses: number[] = [];
    for (let r = 0; r < runs; r++) {
      checks.push(
        await measure(async () => {
          const { entry } = await cache.check(key);
          if (!entry) throw new Error("did not check");
          entry.close();
        }),
      );
      shas.push((await measure(() => new Bun.CryptoHasher("sha256").update(bytes).digest())).total);
      accesses.push((await measure(() => accessSync(cache.fileOf(key)))).total);
    }
    const f = (xs: number[]) => median(xs).toFixed(2);
    console.log(`| ${mib} MiB | ${f(checks.map((c) => c.total))} | ${f(checks.map((c) => c.stall))} | ${f(shas)} | ${f(accesses)} |`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
