// The executor runs its module on its only JS thread, and kill signals reach it through C
// handlers (src/engines/native/kill-signals.c): a busy loop traps at the next epoch check, a
// sleep in poll_oneoff wakes at once, and a module blocked in a host call that never returns
// to wasm (a read of stdin) ends with 128+signal when the kill grace is over. The executor runs
// here as its own process (from source), so the handlers are installed in it, not in the test
// runner. No timings are asserted: where a path must not be the grace timer, the grace is a
// minute, and that path's own evidence (the --stats line, written only after the run returned)
// is checked.
import { beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SMALL_VM_ENV, smallVmEntries } from "../../../src/common/vm-env.ts";
import { KILL_LIB_NAME, killLibFile } from "../../../src/engines/kill-signals.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { tempDir } from "../../support/temp-dirs.ts";
import { prepare, REPO, wasm, writePlan } from "./helpers.ts";

const SHIM = join(REPO, "src/bin/containerd-shim-wasmtime-v1.ts");
let dir: string;
let lib: string;

// Each module says on stdout that it got where it blocks, then blocks there.
const SPIN = `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "spinning\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 9))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))
    (loop $l (br $l))))`;
// poll_oneoff on one relative clock of 600 s (what sleep() compiles to).
const SLEEP = `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "sleeping\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 9))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))
    (i64.store (i32.const 128) (i64.const 1))
    (i32.store8 (i32.const 136) (i32.const 0))
    (i32.store (i32.const 144) (i32.const 1))
    (i64.store (i32.const 152) (i64.const 600000000000))
    (drop (call $poll (i32.const 128) (i32.const 256) (i32.const 1) (i32.const 320)))))`;
const READ = `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $r (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "reading\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 8))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))
    (i32.store (i32.const 64) (i32.const 1024)) (i32.store (i32.const 68) (i32.const 64))
    (drop (call $r (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 40)))))`;

beforeAll(() => {
  prepare();
  const r = Bun.spawnSync(["bash", join(REPO, "scripts/build-native.sh")], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`build-native.sh failed: ${r.stderr.toString()}`);
  // The script prints each library it built, one a line.
  lib =
    r.stdout
      .toString()
      .split("\n")
      .find((l) => l.endsWith(`/${KILL_LIB_NAME}`)) ?? "";
  dir = tempDir("bunwasi-kill-");
  writeFileSync(join(dir, "spin.wat"), SPIN);
  writeFileSync(join(dir, "sleep.wat"), SLEEP);
  writeFileSync(join(dir, "read.wat"), READ);
});

/** Starts the executor on `module` with stdin a pipe nobody writes; resolves once it printed `ready`. */
async function startExecutor(module: string, ready: string, opts: { graceMs: number; env?: Record<string, string> }) {
  const p = Bun.spawn(
    [process.execPath, SHIM, "executor", "--stats", "--kill-grace-ms", String(opts.graceMs), "--plan", writePlan(dir, module)],
    {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, ...opts.env },
    },
  );
  const reader = p.stdout.getReader();
  let seen = "";
  while (!seen.includes(ready)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`executor ended before "${ready}": ${seen} ${await new Response(p.stderr).text()}`);
    seen += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return p;
}

/** Resolves once signal `sig` is no longer pending for `pid` (delivered; 60 s liveness bound). */
async function untilDelivered(pid: number, sig: number): Promise<void> {
  const bit = 1n << BigInt(sig - 1);
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; await Bun.sleep(1)) {
    const status = await Bun.file(`/proc/${pid}/status`).text();
    const pending = ["ShdPnd", "SigPnd"].map((k) => BigInt(`0x${new RegExp(`^${k}:\\s*([0-9a-f]+)`, "m").exec(status)?.[1] ?? "0"}`));
    if (pending.every((p) => (p & bit) === 0n)) return;
  }
  throw new Error(`signal ${sig} still pending for ${pid}`);
}

async function killed(p: Bun.Subprocess<"pipe", "pipe", "pipe">, sig: NodeJS.Signals) {
  p.kill(sig);
  const code = await p.exited;
  const stderr = await new Response(p.stderr).text();
  p.stdin.end();
  return { code, signal: p.signalCode, stderr };
}

describe("the C helper", () => {
  test("setup builds it with clang; a second build leaves it alone, a newer source rebuilds it", () => {
    const st = statSync(lib);
    expect(lib.endsWith(`/build/native/${KILL_LIB_NAME}`)).toBe(true);
    expect(readFileSync(lib).subarray(0, 4)).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46])); // ELF
    const again = Bun.spawnSync(["bash", join(REPO, "scripts/build-native.sh")], { stdout: "pipe" });
    expect(again.exitCode).toBe(0);
    expect(statSync(lib).mtimeMs).toBe(st.mtimeMs);
    // Older than its source: the next build must redo it.
    const old = new Date(statSync(join(REPO, "src/engines/native/kill-signals.c")).mtimeMs - 60_000);
    utimesSync(lib, old, old);
    const rebuilt = Bun.spawnSync(["bash", join(REPO, "scripts/build-native.sh")], { stdout: "pipe" });
    expect(rebuilt.exitCode).toBe(0);
    expect(statSync(lib).mtimeMs).toBeGreaterThan(old.getTime());
    const nm = Bun.spawnSync(["nm", "-D", "--defined-only", lib], { stdout: "pipe" }).stdout.toString();
    for (const sym of ["bunwasi_kill_install", "bunwasi_kill_set_interrupt", "bunwasi_kill_word", "bunwasi_kill_sleep"]) {
      expect(nm).toContain(sym);
    }
  });

  test("setup.sh and build-shim.sh build it; the wasmtime engine ships it in the executor directory", () => {
    expect(readFileSync(join(REPO, "scripts/setup.sh"), "utf8")).toMatch(/^bash scripts\/build-native\.sh/m);
    expect(readFileSync(join(REPO, "scripts/build-shim.sh"), "utf8")).toMatch(/^bash scripts\/build-native\.sh/m);
    expect(killLibFile()).toEqual({ name: KILL_LIB_NAME, source: lib, sharedObject: true });
    expect(wasmtime.executor().files).toContainEqual({ name: KILL_LIB_NAME, source: lib, sharedObject: true });
  });
});

describe("kill of a module on the executor's main thread", () => {
  for (const [sig, code] of [
    ["SIGTERM", 143],
    ["SIGINT", 130],
  ] as const) {
    test(`a busy loop: ${sig} traps it at the next epoch check → ${code}`, async () => {
      const p = await startExecutor(join(dir, "spin.wat"), "spinning", { graceMs: 60_000 });
      const r = await killed(p, sig);
      expect(r.code).toBe(code);
      // Written after the run returned: the trap ended it, not the grace timer.
      expect(r.stderr).toContain(`bunwasi-executor: code=${code} `);
      expect(r.stderr).toContain("thread=main");
    });
  }

  test("a sleep in poll_oneoff: SIGTERM wakes it at once → 143", async () => {
    const p = await startExecutor(join(dir, "sleep.wat"), "sleeping", { graceMs: 60_000 });
    const r = await killed(p, "SIGTERM");
    expect(r.code).toBe(143);
    expect(r.stderr).toContain("bunwasi-executor: code=143 ");
    expect(r.stderr).toContain("thread=main");
  });

  test("the demo app's daemon loop (C nanosleep): SIGHUP → 129", async () => {
    const p = await startExecutor(wasm("wasi-demo-app"), "\n", { graceMs: 60_000 });
    const r = await killed(p, "SIGHUP");
    expect(r.code).toBe(129);
    expect(r.stderr).toContain("bunwasi-executor: code=129 ");
  });

  test("a read of stdin that never returns: SIGTERM ends it after the grace → 143", async () => {
    const p = await startExecutor(join(dir, "read.wat"), "reading", { graceMs: 50 });
    const r = await killed(p, "SIGTERM");
    expect(r.code).toBe(143);
  });

  test("a second signal does not change the status: the first one wins", async () => {
    const p = await startExecutor(join(dir, "read.wat"), "reading", { graceMs: 500 });
    p.kill("SIGTERM");
    // Both pending at once, the kernel would deliver the lower-numbered SIGQUIT first: send it
    // only once SIGTERM has left the pending set (its handler then holds SIGQUIT off).
    await untilDelivered(p.pid, 15);
    p.kill("SIGQUIT");
    expect(await p.exited).toBe(143);
    p.stdin.end();
  });

  for (const [name, ready] of [
    ["spin.wat", "spinning"],
    ["sleep.wat", "sleeping"],
    ["read.wat", "reading"],
  ] as const) {
    test(`SIGKILL ends ${name} (the kernel's kill: no handler runs)`, async () => {
      const p = await startExecutor(join(dir, name), ready, { graceMs: 60_000 });
      const r = await killed(p, "SIGKILL");
      expect(r.code).toBe(137);
      expect(r.signal).toBe("SIGKILL");
    });
  }

  test("BUNWASI_EXECUTOR_WORKER=1: the Worker path, with the same statuses", async () => {
    const p = await startExecutor(join(dir, "spin.wat"), "spinning", { graceMs: 60_000, env: { BUNWASI_EXECUTOR_WORKER: "1" } });
    const r = await killed(p, "SIGTERM");
    expect(r.code).toBe(143);
    expect(r.stderr).toContain("thread=worker");
  });

  test("a module that ends by itself: its own status, on the main thread", async () => {
    const plan = writePlan(dir, wasm("wasi-demo-app"), { args: ["app", "exit", "3"] });
    const p = Bun.spawn([process.execPath, SHIM, "executor", "--stats", "--plan", plan], {
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(await p.exited).toBe(3);
    expect(await new Response(p.stderr).text()).toContain("thread=main");
  });
});

describe("the executor's environment: its VM settings, never the module's", () => {
  test("the shim gives the executor SMALL_VM_ENV and nothing else", () => {
    expect(smallVmEntries()).toEqual(Object.entries(SMALL_VM_ENV).map(([k, v]) => `${k}=${v}`));
    expect(smallVmEntries()).toContain("BUN_JSC_useConcurrentJIT=0");
  });

  test("with them, a sleeping module's executor keeps one tokio worker and no JIT, GC or warm-up thread", async () => {
    const env: Record<string, string> = { ...SMALL_VM_ENV };
    // The demo app's daemon writes its verse (wasmtime's WASI, on its tokio runtime), sleeps a
    // second, and sings it again. Tokio names its workers once they run, which can be after
    // the first line is out (seen in CI): we look once the second verse has begun.
    const p = await startExecutor(wasm("wasi-demo-app"), "just because...\nThis is a song", { graceMs: 60_000, env });
    let threads: string[];
    try {
      threads = readdirSync(`/proc/${p.pid}/task`).map((t) => readFileSync(`/proc/${p.pid}/task/${t}/comm`, "utf8").trim());
    } finally {
      // Killed before any assertion, so a failing one leaves no executor behind.
      expect((await killed(p, "SIGTERM")).code).toBe(143);
    }
    expect(threads.filter((n) => n === "tokio-rt-worker")).toHaveLength(1);
    for (const n of ["JSCWarmUp", "JITWorker", "HeapHelper"]) expect(threads).not.toContain(n);
  });

  test("the module's env is its plan's: nothing of the executor's own environment reaches it", async () => {
    const env: Record<string, string> = { PATH: "/bin", MINE: "1", ...SMALL_VM_ENV };
    const plan = writePlan(dir, wasm("env"), {
      args: ["env"],
      env: ["PLANNED=1", "BUN_JSC_numberOfGCMarkers=2", "BUNWASI_EXECUTOR_WORKER=1"],
    });
    const p = Bun.spawn([process.execPath, SHIM, "executor", "--plan", plan], { stdout: "pipe", env });
    const out = await new Response(p.stdout).text();
    expect(await p.exited).toBe(0);
    expect(out.split("\n").filter((l) => l.startsWith("env:"))).toEqual([
      "env:PLANNED=1",
      "env:BUN_JSC_numberOfGCMarkers=2",
      "env:BUNWASI_EXECUTOR_WORKER=1",
    ]);
  });
});
