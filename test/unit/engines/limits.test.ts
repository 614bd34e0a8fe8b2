// A run's limits in the wasmtime engine (issue 16, items 2 and 3): what a module declares
// (src/engines/wasmtime/wasm-shape.ts), the store limits that keep all of its memories and
// tables within the memory limit together (store.ts), the CPU throttle's bucket and its
// accounting with fake clocks (cpu-throttle.ts), and both on real runs: the attack modules
// of test/wasm fail their grow (or their start) under a 64 MiB limit, and a busy module with
// a quota is throttled, one without is not, until an Update gives it one.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EXIT_ENGINE_ERROR, type RunControl } from "../../../src/engines/engine.ts";
import { CpuBucket, CpuThrottle, niceOfShares, type ThreadClock } from "../../../src/engines/wasmtime/cpu-throttle.ts";
import { WasmtimeEngine } from "../../../src/engines/wasmtime/engine.ts";
import { CPU_CHECKS, CPU_THROTTLED, newRunWords, setCpuWords, throttling } from "../../../src/engines/wasmtime/run-atomics.ts";
import { storeLimits, TABLE_ELEMENT_BYTES, TABLE_ROOM } from "../../../src/engines/wasmtime/store.ts";
import { wasmShape } from "../../../src/engines/wasmtime/wasm-shape.ts";
import { until } from "../../support/until.ts";
import { component, prepare, prepareComponents, tmp, wasm } from "./helpers.ts";

const MiB = 2 ** 20;
const PAGE = 65536;
let engine: WasmtimeEngine;

beforeAll(() => {
  engine = new WasmtimeEngine({ libPath: prepare().libPath });
  prepareComponents();
});
afterAll(() => engine.close());

const shapeOf = (path: string) => wasmShape(new Uint8Array(readFileSync(path)));
const watShape = (text: string) => {
  const d = tmp();
  writeFileSync(join(d, "m.wat"), text);
  const out = Bun.spawnSync(["wat2wasm", "--enable-multi-memory", join(d, "m.wat"), "-o", join(d, "m.wasm")]);
  if (out.exitCode !== 0) throw new Error(out.stderr.toString());
  return shapeOf(join(d, "m.wasm"));
};

describe("what a module declares", () => {
  test("core modules: each defined memory's initial bytes, each table's initial elements, one instance", () => {
    expect(shapeOf(wasm("mem4"))).toEqual({ memories: [PAGE, PAGE, PAGE, PAGE], tables: [], instances: 1 });
    expect(shapeOf(wasm("mem4-initial"))).toEqual({ memories: [960 * PAGE, 960 * PAGE, 960 * PAGE, 960 * PAGE], tables: [], instances: 1 });
    expect(shapeOf(wasm("table24m"))).toEqual({ memories: [PAGE], tables: [1], instances: 1 });
    // A C program (wasi-libc): one memory, one table.
    const demo = shapeOf(wasm("wasi-demo-app"));
    expect([demo.memories.length, demo.tables.length, demo.instances]).toEqual([1, 1, 1]);
  });

  test("imported memories and tables are another's: not counted; globals and functions imported around them are skipped", () => {
    const shape = watShape(`(module
      (import "env" "f" (func))
      (import "env" "g" (global (mut i32)))
      (import "env" "m" (memory 7))
      (import "env" "t" (table 9 funcref))
      (memory 2 5)
      (table 3 externref))`);
    expect(shape).toEqual({ memories: [2 * PAGE], tables: [3], instances: 1 });
  });

  test("a component: the memories and tables its core modules define, an instance per core module", () => {
    // C through the preview 1 adapter: the program's memory (the adapter imports it), the
    // program's table and the shim's (the fixup module imports that one).
    const cat = shapeOf(component("cat"));
    expect(cat.memories).toHaveLength(1);
    expect(cat.tables).toHaveLength(2);
    expect(cat.instances).toBe(4);
  });

  test("bytes that are no module are an error", () => {
    expect(() => wasmShape(new TextEncoder().encode("(module)"))).toThrow("not a wasm module or component");
    expect(() => wasmShape(readFileSync(wasm("mem4")).subarray(0, 30))).toThrow("truncated");
  });
});

describe("store limits: all memories and tables together within the limit", () => {
  test("one memory and one table (a WASI program): the table gets its start and some room, the memory the rest", () => {
    const l = storeLimits(64 * MiB, { memories: [2 * PAGE], tables: [5], instances: 1 });
    expect(l).toEqual({
      memorySize: Math.floor((64 * MiB - (5 + TABLE_ROOM) * TABLE_ELEMENT_BYTES) / PAGE) * PAGE,
      tableElements: 5 + TABLE_ROOM,
      instances: 1,
      tables: 1,
      memories: 1,
    });
    expect(l.memorySize * l.memories + l.tableElements * l.tables * TABLE_ELEMENT_BYTES).toBeLessThanOrEqual(64 * MiB);
  });

  test("the run's own instances (a core module's WASI helper) are counted on top, and make no memory or table", () => {
    const l = storeLimits(64 * MiB, { memories: [2 * PAGE], tables: [5], instances: 1 }, 1);
    expect(l).toEqual({ ...storeLimits(64 * MiB, { memories: [2 * PAGE], tables: [5], instances: 1 }), instances: 2 });
  });

  test("four memories share it: 16 MiB each under 64 MiB", () => {
    expect(storeLimits(64 * MiB, { memories: [PAGE, PAGE, PAGE, PAGE], tables: [], instances: 1 })).toEqual({
      memorySize: 16 * MiB,
      tableElements: 0,
      instances: 1,
      tables: 0,
      memories: 4,
    });
  });

  test("a table that starts large keeps its start but gets no room past the limit", () => {
    const l = storeLimits(64 * MiB, { memories: [PAGE], tables: [8 * 2 ** 20 - 100_000], instances: 1 });
    expect(l.tableElements * TABLE_ELEMENT_BYTES + l.memorySize).toBeLessThanOrEqual(64 * MiB);
    expect(l.tableElements).toBeGreaterThanOrEqual(8 * 2 ** 20 - 100_000);
  });

  test("a module that needs more at start than the limit, or more than a memory's share, is refused saying so", () => {
    expect(() => storeLimits(64 * MiB, { memories: Array(4).fill(960 * PAGE), tables: [], instances: 1 })).toThrow(
      "memory limit: the module's 4 linear memories and 0 tables need 240 MiB at start, more than the container's limit of 64 MiB",
    );
    expect(() => storeLimits(64 * MiB, { memories: [40 * MiB, PAGE], tables: [], instances: 1 })).toThrow(
      "memory limit: the container's limit of 64 MiB is shared by the module's 2 linear memories and 0 tables, 32 MiB for each memory, and one needs 40 MiB at start",
    );
    expect(() => storeLimits(64 * MiB, { memories: [], tables: [24_000_000], instances: 1 })).toThrow("need 183.1 MiB at start");
  });

  test("an unknown module (precompiled bytes) is taken as one memory, one table, one instance", () => {
    const l = storeLimits(64 * MiB);
    expect([l.memories, l.tables, l.instances]).toEqual([1, 1, 1]);
  });
});

describe("the memory attacks under a 64 MiB limit (real runs)", () => {
  async function run(name: string) {
    const d = tmp();
    const err = join(d, "stderr");
    const r = await engine.execute({
      modulePath: wasm(name),
      args: [name],
      env: [],
      memoryLimitBytes: 64 * MiB,
      stderr: { kind: "path", path: err },
    });
    let stderr = "";
    try {
      stderr = readFileSync(err, "utf8");
    } catch {}
    return { code: r.code, stderr };
  }

  test("four memories grown to 60 MiB each: the first grow is refused (exit 12)", async () => {
    expect(await run("mem4")).toEqual({ code: 12, stderr: "" });
  });

  test("a table grown to 24 million elements: refused (exit 12)", async () => {
    expect(await run("table24m")).toEqual({ code: 12, stderr: "" });
  });

  test("four memories of 60 MiB from the start: not run (125), saying why", async () => {
    const r = await run("mem4-initial");
    expect(r.code).toBe(EXIT_ENGINE_ERROR);
    expect(r.stderr).toBe(
      "memory limit: the module's 4 linear memories and 0 tables need 240 MiB at start, more than the container's limit of 64 MiB\n",
    );
  });

  test("a single memory may still use (nearly) the whole limit: grow.wasm's 64 MiB under 128 MiB", async () => {
    expect(await engine.run({ modulePath: wasm("grow"), args: ["g"], env: [], memoryLimitBytes: 128 * MiB })).toBe(0);
  });
});

describe("the CPU bucket", () => {
  const ms = 1e6;

  test("a full quota at first; over it, the sleep that brings it back to zero", () => {
    const b = new CpuBucket(10 * ms, 100 * ms, 0, 0);
    expect(b.debt(5 * ms, 5 * ms)).toBe(0); // 5 of 10 used: min(10, 10 + 0.5) - 5 = 5 left
    // 30 ms more CPU in 30 ms: tokens = min(10, 5 + 3) - 30 = -22 ms → 220 ms at 0.1.
    expect(b.debt(35 * ms, 35 * ms)).toBe(220 * ms);
    expect(b.debt(255 * ms, 35 * ms)).toBe(0); // slept it off, used nothing meanwhile
  });

  test("idle time banks at most one quota", () => {
    const b = new CpuBucket(10 * ms, 100 * ms, 0, 0);
    expect(b.debt(10_000 * ms, 0)).toBe(0); // 10 s idle
    expect(b.debt(10_000 * ms, 10 * ms)).toBe(0); // the 10 ms quota, at once
    expect(b.debt(10_000 * ms, 11 * ms)).toBe(10 * ms); // 1 ms past it: 10 ms at 0.1
  });

  test("a spinner checked every 10 ms of its CPU for 5 s uses 0.1 of the time, within one period's quota", () => {
    const b = new CpuBucket(10 * ms, 100 * ms, 0, 0);
    let wall = 0;
    let cpu = 0;
    while (wall < 5000 * ms) {
      wall += 10 * ms;
      cpu += 10 * ms;
      wall += b.debt(wall, cpu);
    }
    expect(Math.abs(cpu - 0.1 * wall)).toBeLessThanOrEqual(10 * ms);
  });
});

describe("the CPU throttle's accounting (fake clocks)", () => {
  function fake() {
    const clock = { wall: 0, cpu: 0, nice: [] as number[], slept: [] as number[] };
    const thread: ThreadClock = {
      wallNs: () => clock.wall,
      cpuNs: () => clock.cpu,
      nice: (n) => clock.nice.push(n),
      sleep: (ns) => {
        clock.slept.push(ns);
        clock.wall += ns;
        return false;
      },
    };
    const buf = newRunWords();
    const words = new Int32Array(buf);
    return { clock, words, buf, throttle: new CpuThrottle(words, thread) };
  }

  test("no quota: nothing counted, nothing slept", () => {
    const f = fake();
    f.clock.cpu = f.clock.wall = 1e9;
    expect(f.throttle.check()).toBe(false);
    expect(throttling(f.buf)).toEqual({ periods: 0, throttledPeriods: 0, throttledNs: 0 });
  });

  test("over the quota: it sleeps in steps of at most a period, and counts what it slept", () => {
    const f = fake();
    setCpuWords(f.words, { quota: 10_000, period: 100_000 });
    f.throttle.check(); // the bucket starts here, full
    f.clock.wall += 50e6;
    f.clock.cpu += 50e6; // 50 ms busy on a full 10 ms bucket (the refill is capped): 40 ms over → 400 ms asleep
    expect(f.throttle.check()).toBe(false);
    expect(f.clock.slept).toEqual([100e6, 100e6, 100e6, 100e6]);
    expect(throttling(f.buf)).toEqual({ periods: 2, throttledPeriods: 1, throttledNs: 400e6 });
    f.clock.wall += 105e6; // idle for a period: the bucket is full again
    f.clock.cpu += 5e6;
    f.throttle.check();
    expect(throttling(f.buf)).toEqual({ periods: 3, throttledPeriods: 1, throttledNs: 400e6 });
  });

  test("shares set the thread's nice value when they change; a changed quota starts a new, full bucket", () => {
    const f = fake();
    setCpuWords(f.words, { shares: 102 });
    f.throttle.check();
    f.throttle.check();
    expect(f.clock.nice).toEqual([10]);
    setCpuWords(f.words, { quota: 10_000, period: 100_000 });
    f.throttle.check();
    expect(f.clock.nice).toEqual([10, 0]);
    f.clock.wall += 20e6;
    f.clock.cpu += 20e6;
    f.throttle.check();
    expect(Atomics.load(f.words, CPU_THROTTLED)).toBe(1);
    setCpuWords(f.words, { quota: 50_000, period: 100_000 }); // Update: a new bucket of 50 ms
    f.throttle.check();
    f.clock.wall += 40e6;
    f.clock.cpu += 40e6;
    f.throttle.check();
    expect(Atomics.load(f.words, CPU_THROTTLED)).toBe(1);
    expect(Atomics.load(f.words, CPU_CHECKS)).toBe(4);
  });

  test("shares map to the nice value of the nearest CFS weight", () => {
    expect([2, 102, 512, 1024, 2048, 262144].map(niceOfShares)).toEqual([19, 10, 3, 0, -3, -20]);
  });

  test("the executor's kill word (no room for CPU words) has no throttle", () => {
    expect(CpuThrottle.applies(new Int32Array(6))).toBe(false);
    expect(CpuThrottle.applies(new Int32Array(newRunWords()))).toBe(true);
  });
});

describe("a busy module's CPU quota (real runs)", () => {
  test("with a quota it is throttled, without none is not, until its control gives it one; a kill ends a throttled run", async () => {
    const runs = [{ quota: 10_000, period: 100_000 }, undefined].map((cpu) => {
      const abort = new AbortController();
      let control: RunControl | undefined;
      const done = engine.execute({
        modulePath: wasm("busy"),
        args: ["busy"],
        env: [],
        ...(cpu ? { cpu } : {}),
        signal: abort.signal,
        onControl: (c) => {
          control = c;
        },
      });
      return { abort, done, control: () => control };
    });
    const [limited, free] = runs as [(typeof runs)[0], (typeof runs)[0]];
    const stats = (r: typeof limited) => r.control()?.cpuThrottling?.();
    // Twice: the first sleep is counted in nanoseconds once it is over, before the second starts.
    await until("the limited run to be throttled twice", () => (stats(limited)?.throttledPeriods ?? 0) >= 2, 60_000);
    expect(stats(limited)?.throttledNs).toBeGreaterThan(0);
    // The free one went through the same epoch ticks: never counted, never slept.
    expect(stats(free)).toEqual({ periods: 0, throttledPeriods: 0, throttledNs: 0 });
    free.control()?.setCpu?.({ quota: 20_000, period: 100_000 });
    await until("the updated run to be throttled", () => (stats(free)?.throttledPeriods ?? 0) > 0, 60_000);
    for (const r of runs) r.abort.abort(9);
    expect((await limited.done).code).toBe(137);
    expect((await free.done).code).toBe(137);
  }, 120_000);
});
