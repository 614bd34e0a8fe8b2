// A signal to an executor-like process interrupts the module it runs: the process exits on
// its own (not killed by the signal) with 128+signal, reported by the run itself. No timings
// are asserted; the fixture's kill grace is an hour, so the give-up timer cannot be what
// ended a run, and the run thread's own stats prove it was inside the entry call.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { prepare, wasm } from "./helpers.ts";

/** Liveness only: a fixture that never stops is SIGKILLed so the test fails instead of hanging. */
const LIVENESS_MS = 60_000;

// Says "spinning" on stdout, then loops with no host call at all: only an epoch trap stops it.
const SPIN = `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "spinning\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 9))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))
    (loop $l (br $l))))`;

let libPath: string;
let dir: string;
beforeAll(() => {
  libPath = prepare().libPath;
  dir = mkdtempSync(join(tmpdir(), "bunwasi-signal-"));
  writeFileSync(join(dir, "spin.wat"), SPIN);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Starts the fixture, waits until the module printed `ready`, sends `sig`, collects the end. */
async function startAndSignal(module: string, args: string[], ready: string, sig: NodeJS.Signals) {
  const p = Bun.spawn([process.execPath, join(import.meta.dir, "fixtures", "run-module.ts"), libPath, module, ...args], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const liveness = setTimeout(() => p.kill("SIGKILL"), LIVENESS_MS);
  const stderr = new Response(p.stderr).text();
  const reader = p.stdout.getReader();
  const decoder = new TextDecoder();
  let out = "";
  while (!out.includes(ready)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`fixture ended before "${ready}": ${out}\n${await stderr}`);
    out += decoder.decode(value);
  }
  const t0 = performance.now();
  p.kill(sig);
  const code = await p.exited;
  clearTimeout(liveness);
  const ms = performance.now() - t0;
  reader.releaseLock();
  const err = await stderr;
  const stats = JSON.parse(/^stats (.*)$/m.exec(err)?.[1] ?? "null");
  console.log(`${module} ${sig} → exit ${code} after ${ms.toFixed(0)} ms (printed, not asserted)`);
  return { code, signalCode: p.signalCode, stats, err };
}

test("SIGTERM to a process running a compute-only module: the epoch trap ends the run with 143", async () => {
  const r = await startAndSignal(join(dir, "spin.wat"), [], "spinning", "SIGTERM");
  // Not killed by the signal: its handler interrupted the engine and run() returned.
  expect(r.signalCode).toBeNull();
  expect(r.code).toBe(143);
  // The run thread's own exit message, from inside the entry call (the give-up path reports
  // runMs 0, and an hour of grace keeps it out of the way anyway).
  expect(r.stats?.runMs).toBeGreaterThan(0);
});

test("SIGINT to a process running the daemon demo (asleep in a host call): 130", async () => {
  const r = await startAndSignal(wasm("wasi-demo-app"), ["daemon"], "\n", "SIGINT");
  expect(r.signalCode).toBeNull();
  expect(r.code).toBe(130);
  expect(r.stats?.runMs).toBeGreaterThan(0);
});
