// What computing a module's compile-cache key costs a process that serves other pods meanwhile
// (a shim server, the daemon): the longest time its event loop is held, hashing in one go
// (CompileCache.key) against hashing in slices (CompileCache.keyInSlices, what the compile
// path uses), for modules of a few sizes. A 1 ms interval timer stands in for the other
// pods' calls; its largest gap is the stall.
//
//   bun bench/compile-cache/key.ts [--runs 9] [--sizes 1,10,50]   (sizes in MiB)
//
// Prints a table of medians over the runs: total time of the key and the longest stall.

import { parseArgs } from "node:util";
import { CompileCache } from "../../src/engines/cache.ts";

const { values } = parseArgs({ options: { runs: { type: "string", default: "9" }, sizes: { type: "string", default: "1,10,50" } } });
const runs = Number(values.runs);
const sizes = values.sizes.split(",").map(Number);

const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function measure(compute: () => string | Promise<string>): Promise<{ total: number; stall: number }> {
  let last = performance.now();
  let stall = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    stall = Math.max(stall, now - last);
    last = now;
  }, 1);
  await Bun.sleep(5); // the timer is running
  last = performance.now();
  const t = performance.now();
  await compute();
  const total = performance.now() - t;
  await Bun.sleep(3); // a timer due during the last stretch reports it
  clearInterval(timer);
  return { total, stall };
}

console.log("| module | one go: key ms | one go: longest stall ms | slices: key ms | slices: longest stall ms |");
console.log("|---:|---:|---:|---:|---:|");
for (const mib of sizes) {
  const module = new Uint8Array(mib << 20);
  for (let i = 0; i < module.length; i += 4096) module[i] = i & 0xff;
  const one: { total: number; stall: number }[] = [];
  const sliced: { total: number; stall: number }[] = [];
  for (let r = 0; r < runs; r++) {
    one.push(await measure(() => CompileCache.key(module, "wasmtime", "48.0.0", "o1")));
    sliced.push(await measure(() => CompileCache.keyInSlices(module, "wasmtime", "48.0.0", "o1")));
  }
  const f = (xs: { total: number; stall: number }[], k: "total" | "stall") => median(xs.map((x) => x[k])).toFixed(1);
  console.log(`| ${mib} MiB | ${f(one, "total")} | ${f(one, "stall")} | ${f(sliced, "total")} | ${f(sliced, "stall")} |`);
}
