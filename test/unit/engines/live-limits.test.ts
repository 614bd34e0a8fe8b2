// Limits changed while a run runs (RunControl.setMemoryLimit, issue 17 item 2), in the wasmtime
// engine with the real libwasmtime: a module's store holds to a new memory limit from its next
// epoch callback on (lower: a grow past it fails; higher: one that failed succeeds; set while
// paused: from resume on), and one
// below what the module holds is refused, nothing changed; one its shape cannot start under is
// refused saying why.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MemoryLimitBelowUsage, type RunControl } from "../../../src/engines/engine.ts";
import { WasmtimeEngine } from "../../../src/engines/wasmtime/engine.ts";
import { GROW_STEPS_WAT } from "../../support/grow-steps.ts";
import { prepare, tmp } from "./helpers.ts";

const MiB = 2 ** 20;
let engine: WasmtimeEngine;

beforeAll(() => {
  engine = new WasmtimeEngine({ libPath: prepare().libPath });
});
afterAll(() => engine.close());

/** Liveness only (fail instead of hang), never a bound on how fast anything is. */
async function until<T>(what: string, f: () => T | undefined | false): Promise<T> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

describe("a memory limit changed while the module runs", () => {
  test("lower: the next grow past it fails; below what it holds: refused, nothing changed; higher: a grow that failed succeeds", async () => {
    const dir = tmp();
    const out = join(dir, "out");
    writeFileSync(join(dir, "m.wat"), GROW_STEPS_WAT);
    writeFileSync(out, "");
    const abort = new AbortController();
    let control: RunControl | undefined;
    const done = engine.execute({
      modulePath: join(dir, "m.wat"),
      args: ["m"],
      env: [],
      rootDir: dir,
      stdout: { kind: "path", path: out },
      memoryLimitBytes: 16 * MiB,
      signal: abort.signal,
      onControl: (c) => {
        control = c;
      },
    });
    let asked = 0;
    /** One grow of 1 MiB: "+" if it grew, "-" if refused. */
    const grow = async () => {
      asked++;
      appendFileSync(join(dir, "n"), "x");
      const lines = await until(`answer ${asked}`, () => {
        const l = readFileSync(out, "utf8").split("\n").filter(Boolean);
        return l.length >= asked && l;
      });
      return lines[asked - 1];
    };
    const c = await until("the run's control", () => control);
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
    // Set while it is paused (its thread waits in its epoch callback): it holds from resume on.
    c.pause();
    await c.setMemoryLimit?.(8 * MiB);
    c.resume();
    expect(await grow()).toBe("-");
    abort.abort(9);
    expect((await done).code).toBe(137);
  }, 120_000);

  test("a limit the module cannot even start under is refused, saying why", async () => {
    const dir = tmp();
    writeFileSync(join(dir, "m.wat"), GROW_STEPS_WAT);
    const abort = new AbortController();
    let control: RunControl | undefined;
    const done = engine.execute({
      modulePath: join(dir, "m.wat"),
      args: ["m"],
      env: [],
      rootDir: dir,
      memoryLimitBytes: 16 * MiB,
      signal: abort.signal,
      onControl: (c) => {
        control = c;
      },
    });
    const c = await until("the run's control", () => control);
    await expect(c.setMemoryLimit?.(1000) ?? Promise.resolve()).rejects.toThrow(
      "memory limit: the module's 1 linear memory and 0 tables need 1 MiB at start, more than the container's limit of 0.0 MiB",
    );
    abort.abort(9);
    expect((await done).code).toBe(137);
  }, 60_000);
});
