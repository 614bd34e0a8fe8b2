// Limits changed while a run runs (RunControl.setMemoryLimit, issue 17 item 2), in the wasmtime
// engine with the real libwasmtime: a module's store holds to a new memory limit from its next
// epoch callback on (lower: a grow past it fails; higher: one that failed succeeds; set while
// paused: from resume on), and one
// below what the module holds is refused, nothing changed; one its shape cannot start under is
// refused saying why. The same for a run of its own (a Worker) and a pooled run (a run pool's
// store, ../../../src/engines/wasmtime/pool.ts: its limit is set between two of its slices).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MemoryLimitBelowUsage, type RunControl } from "../../../src/engines/engine.ts";
import { WasmtimeEngine } from "../../../src/engines/wasmtime/engine.ts";
import { poolLibPath } from "../../../src/engines/wasmtime/pool.ts";
import { GROW_STEPS_WAT } from "../../support/grow-steps.ts";
import { until } from "../../support/until.ts";
import { prepare, REPO, tmp } from "./helpers.ts";

const MiB = 2 ** 20;
let engine: WasmtimeEngine;
/** An engine with run pools, as the daemon's: its runs of a compiled (cached) core module are pooled. */
let pooling: WasmtimeEngine;

beforeAll(() => {
  const { libPath } = prepare();
  const r = Bun.spawnSync(["bash", join(REPO, "scripts/build-native.sh")], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`build-native.sh failed: ${r.stderr.toString()}`);
  engine = new WasmtimeEngine({ libPath });
  pooling = new WasmtimeEngine({ libPath, cacheDir: join(tmp(), "cache"), pools: true });
});
afterAll(() => {
  engine.close();
  pooling.close();
});

/** GROW_STEPS_WAT started in a directory of its own with a 16 MiB limit: its control, its output, its end. */
async function startGrowSteps(on: WasmtimeEngine) {
  const dir = tmp();
  const out = join(dir, "out");
  writeFileSync(join(dir, "m.wat"), GROW_STEPS_WAT);
  writeFileSync(out, "");
  const abort = new AbortController();
  let control: RunControl | undefined;
  const done = on.execute({
    modulePath: join(dir, "m.wat"),
    args: ["m"],
    env: [],
    rootDir: dir,
    // All three by path, as the daemon gives them (a pool takes no inherited stdio).
    stdin: { kind: "path", path: "/dev/null" },
    stdout: { kind: "path", path: out },
    stderr: { kind: "path", path: join(dir, "err") },
    memoryLimitBytes: 16 * MiB,
    signal: abort.signal,
    onControl: (c) => {
      control = c;
    },
  });
  const c = await until("the run's control", () => control, 60_000);
  return { dir, out, c, abort, done };
}

const runs = [
  { name: "a run of its own", on: () => engine, pooled: false },
  { name: "a pooled run", on: () => pooling, pooled: true },
];

describe.each(runs)("a memory limit changed while the module runs: $name", ({ on, pooled }) => {
  beforeAll(async () => {
    if (!pooled) return;
    expect(existsSync(poolLibPath() ?? "")).toBe(true);
    // A first run compiles the module into the engine's cache: the pools take compiled modules only.
    // Killed once it runs (compiled by then; its run ends once the artifact is written).
    const first = await startGrowSteps(on());
    appendFileSync(join(first.dir, "n"), "x");
    await until("its first answer", () => readFileSync(first.out, "utf8").includes("\n"), 60_000);
    first.abort.abort(9);
    expect((await first.done).code).toBe(137);
  }, 60_000);

  /** The run is where this case says: a pooled run has no thread of its own to name, its CPU time is counted by its pool. */
  const expectWhere = (c: RunControl) => {
    expect(c.threadId === undefined).toBe(pooled);
    expect(c.cpuNs === undefined).toBe(!pooled);
  };

  test("lower: the next grow past it fails; below what it holds: refused, nothing changed; higher: a grow that failed succeeds", async () => {
    const { dir, out, c, abort, done } = await startGrowSteps(on());
    expectWhere(c);
    let asked = 0;
    /** One grow of 1 MiB: "+" if it grew, "-" if refused. */
    const grow = async () => {
      asked++;
      appendFileSync(join(dir, "n"), "x");
      const lines = await until(
        `answer ${asked}`,
        () => {
          const l = readFileSync(out, "utf8").split("\n").filter(Boolean);
          return l.length >= asked && l;
        },
        60_000,
      );
      return lines[asked - 1];
    };
    // 1 MiB at start (the module's page), then 3 more: 4 MiB held.
    for (let i = 0; i < 3; i++) expect(await grow()).toBe("+");
    expect(await c.memoryBytes?.()).toBe(4 * MiB);
    // Below what it holds: refused, saying both figures; the old limit still holds.
    const below = await c.setMemoryLimit?.(2 * MiB).catch((e) => e);
    expect(below).toBeInstanceOf(MemoryLimitBelowUsage);
    expect((below as MemoryLimitBelowUsage).usage).toBe(4 * MiB);
    expect(await grow()).toBe("+");
    // Lower, to what it holds now (5 MiB): the next grow fails.
    await c.setMemoryLimit?.(5 * MiB);
    expect(await grow()).toBe("-");
    expect(await c.memoryBytes?.()).toBe(5 * MiB);
    // Higher: it grows again, up to the new limit.
    await c.setMemoryLimit?.(7 * MiB);
    expect(await grow()).toBe("+");
    expect(await grow()).toBe("+");
    expect(await grow()).toBe("-");
    // None at all: it grows on.
    await c.setMemoryLimit?.(undefined);
    expect(await grow()).toBe("+");
    // Set while it is paused (its thread waits in its epoch callback; a pooled run is not
    // polled): it holds from resume on.
    c.pause();
    await c.setMemoryLimit?.(8 * MiB);
    c.resume();
    expect(await grow()).toBe("-");
    abort.abort(9);
    expect((await done).code).toBe(137);
  }, 120_000);

  test("a limit the module cannot even start under is refused, saying why", async () => {
    const { c, abort, done } = await startGrowSteps(on());
    expectWhere(c);
    await expect(c.setMemoryLimit?.(1000) ?? Promise.resolve()).rejects.toThrow(
      "memory limit: the module's 1 linear memory and 0 tables need 1 MiB at start, more than the container's limit of 0.0 MiB",
    );
    abort.abort(9);
    expect((await done).code).toBe(137);
  }, 60_000);
});
