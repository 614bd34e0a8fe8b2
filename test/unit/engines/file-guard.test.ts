// What a module may open and how many (src/engines/wasmtime/file-guard.ts, the worker's
// shadows of path_open, fd_close and fd_renumber), on the real engine: fifos, sockets and
// device nodes fail with EACCES before anything waits on them, and a run holds at most its
// cap of handles (EMFILE past it), which closes and renumbers give back. The same on a run of
// its own and in a run pool's store (./pool-guard.ts: the same rules, run through a trampoline).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { RunControl } from "../../../src/engines/engine.ts";
import { WasmtimeEngine } from "../../../src/engines/wasmtime/engine.ts";
import { HandleCount, mayOpen, scratchOffset } from "../../../src/engines/wasmtime/file-guard.ts";
import { poolLibPath } from "../../../src/engines/wasmtime/pool.ts";
import { prepare, REPO, tmp, wasm } from "./helpers.ts";

describe("the rules", () => {
  test("only directories and regular files open (a symlink only where it is not followed)", () => {
    // WASI filetypes: 0 unknown (a fifo), 1 block, 2 char, 3 dir, 4 regular, 5/6 sockets, 7 symlink.
    expect([0, 1, 2, 3, 4, 5, 6, 7].filter((t) => mayOpen(t, true))).toEqual([3, 4]);
    expect([0, 1, 2, 3, 4, 5, 6, 7].filter((t) => mayOpen(t, false))).toEqual([3, 4, 7]);
  });

  test("borrowed memory is 8-aligned, inside the memory, clear of what the call uses", () => {
    expect(scratchOffset(65536, 64, [[100, 110]])).toBe(0);
    expect(scratchOffset(65536, 64, [[10, 20]])).toBe(24);
    expect(
      scratchOffset(65536, 64, [
        [0, 4],
        [8, 30],
      ]),
    ).toBe(32);
    expect(scratchOffset(40, 64, [])).toBeUndefined();
  });

  test("a count against a cap; no cap: never full", () => {
    const c = new HandleCount(4, 5);
    expect(c.full()).toBe(false);
    c.opened();
    expect(c.full()).toBe(true);
    c.closed();
    expect(c.full()).toBe(false);
    const free = new HandleCount(4);
    for (let i = 0; i < 10_000; i++) free.opened();
    expect(free.full()).toBe(false);
  });
});

describe.each([{ pooled: false }, { pooled: true }])("on the engine, pooled: $pooled", ({ pooled }) => {
  let engine: WasmtimeEngine;
  let dir: string;
  let root: string;
  let listener: { stop(): void } | undefined;
  beforeAll(() => {
    if (pooled) {
      const r = Bun.spawnSync(["bash", join(REPO, "scripts/build-native.sh")], { stdout: "pipe", stderr: "pipe" });
      if (r.exitCode !== 0) throw new Error(`build-native.sh failed: ${r.stderr.toString()}`);
      expect(existsSync(poolLibPath() ?? "")).toBe(true);
    }
    dir = tmp("bunwasi-guard-");
    // As the daemon's: with pools, a compiled (cached) core module runs pooled.
    engine = new WasmtimeEngine({ libPath: prepare().libPath, ...(pooled ? { cacheDir: join(dir, "cache"), pools: true } : {}) });
    root = join(dir, "root");
    mkdirSync(join(root, "d"), { recursive: true });
    writeFileSync(join(root, "f.txt"), "a file\n");
    for (const f of ["fifo", "fifo2"]) expect(Bun.spawnSync(["mkfifo", join(root, f)]).exitCode).toBe(0);
    listener = Bun.listen({ unix: join(root, "sock"), socket: { data() {} } });
    if (process.getuid?.() === 0) expect(Bun.spawnSync(["mknod", join(root, "null"), "c", "1", "3"]).exitCode).toBe(0);
  });
  afterAll(() => {
    listener?.stop();
    engine.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function once(module: string | Uint8Array, args: string[], maxOpenFiles?: number) {
    const out = join(dir, "out");
    let control: RunControl | undefined;
    const r = await engine.execute({
      ...(typeof module === "string" ? { modulePath: module } : { module }),
      args,
      env: [],
      rootDir: root,
      // All three by path, as the daemon gives them (a pool takes no inherited stdio).
      stdin: { kind: "path", path: "/dev/null" },
      stdout: { kind: "path", path: out },
      stderr: { kind: "path", path: `${out}.err` },
      ...(maxOpenFiles !== undefined ? { maxOpenFiles } : {}),
      onControl: (c) => {
        control = c;
      },
    });
    // A pooled run has no thread of its own to name; its CPU time is counted by its pool.
    const wasPooled = control?.threadId === undefined && control?.cpuNs !== undefined;
    return { code: r.code, out: readFileSync(out, "latin1"), err: readFileSync(`${out}.err`, "utf8"), wasPooled };
  }

  /** The module run where this case says: pooled, a run compiled before (the pools take compiled modules only). */
  async function run(module: string | Uint8Array, args: string[], maxOpenFiles?: number) {
    let r = await once(module, args, maxOpenFiles);
    if (pooled && !r.wasPooled) r = await once(module, args, maxOpenFiles);
    expect(r.wasPooled).toBe(pooled);
    return { code: r.code, out: r.out, err: r.err };
  }

  test("a fifo, a socket and a device node fail with EACCES at once; files and directories open", async () => {
    const paths = ["/fifo", "/sock", ...(process.getuid?.() === 0 ? ["/null"] : []), "/f.txt", "/d"];
    const r = await run(wasm("escape"), ["escape", ...paths]);
    expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: "" });
    expect(r.out.split("\n").filter(Boolean)).toEqual([
      "/fifo: error Permission denied",
      "/sock: error Permission denied",
      ...(process.getuid?.() === 0 ? ["/null: error Permission denied"] : []),
      "/f.txt: ok a file",
      // fopen of a directory opens it; reading a line of it is what fails.
      "/d: ok ",
    ]);
  });

  test("a run holds at most its cap of handles, stdio and the root included: EMFILE past it", async () => {
    // 3 stdio + the root preopen = 4 of the 64.
    expect((await run(wasm("openloop"), ["openloop"], 64)).out).toBe("opened 60: No file descriptors available\n");
    expect((await run(wasm("openloop"), ["openloop"], 4)).out).toBe("opened 0: No file descriptors available\n");
  });

  // Opens "." and `close`s or renumbers it 200 times: past a cap of 8 unless each gives its handle back.
  const cycle = (give: "close" | "renumber") =>
    new TextEncoder().encode(`(module
      (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 100) ".")
      (func $dot (param $at i32)
        (local $e i32)
        (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 2)
          (i64.const 0x6002) (i64.const 0x6002) (i32.const 0) (local.get $at)))
        (if (local.get $e) (then (call $exit (i32.add (i32.const 100) (local.get $e))))))
      (func (export "_start")
        (local $i i32)
        (loop $l
          (call $dot (i32.const 0))
          ${
            give === "close"
              ? "(drop (call $close (i32.load (i32.const 0))))"
              : "(call $dot (i32.const 4)) (drop (call $renumber (i32.load (i32.const 0)) (i32.load (i32.const 4)))) (drop (call $close (i32.load (i32.const 4))))"
          }
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 200))))))`);

  // Polls with fd subscriptions (a pooled store answers them as wasmtime does: ./pool-poll.ts),
  // each written out as bytes: errno, nevents, then per event its userdata, type, nbytes, error.
  // `opens`: it opens a file and polls it too (a pooled store then has the file guard), else
  // only stdio and fds it never opened.
  const pollsWat = (opens: boolean) => `(module
    ${opens ? '(import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))' : ""}
    (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 100) "f.txt")
    (global $o (mut i32) (i32.const 2000))
    (func $put (param $b i32) (i32.store8 (global.get $o) (local.get $b)) (global.set $o (i32.add (global.get $o) (i32.const 1))))
    (func $sub (param $i i32) (result i32)
      (local $at i32)
      (local.set $at (i32.add (i32.const 400) (i32.mul (local.get $i) (i32.const 48))))
      (memory.fill (local.get $at) (i32.const 0) (i32.const 48))
      (i64.store (local.get $at) (i64.extend_i32_u (local.get $i)))
      (local.get $at))
    (func $fd (param $i i32) (param $tag i32) (param $fd i32)
      (local $at i32)
      (local.set $at (call $sub (local.get $i)))
      (i32.store8 offset=8 (local.get $at) (local.get $tag))
      (i32.store offset=16 (local.get $at) (local.get $fd)))
    (func $clock (param $i i32) (param $ns i64)
      (local $at i32)
      (local.set $at (call $sub (local.get $i)))
      (i32.store offset=16 (local.get $at) (i32.const 1))
      (i64.store offset=24 (local.get $at) (local.get $ns)))
    (func $run (param $n i32)
      (local $k i32) (local $at i32)
      (i32.store (i32.const 1200) (i32.const 0))
      (call $put (call $poll (i32.const 400) (i32.const 1000) (local.get $n) (i32.const 1200)))
      (call $put (i32.load (i32.const 1200)))
      (block $done (loop $l
        (br_if $done (i32.ge_u (local.get $k) (i32.load (i32.const 1200))))
        (local.set $at (i32.add (i32.const 1000) (i32.mul (local.get $k) (i32.const 32))))
        (call $put (i32.load8_u (local.get $at)))
        (call $put (i32.load8_u offset=10 (local.get $at)))
        (call $put (i32.load8_u offset=16 (local.get $at)))
        (call $put (i32.load8_u offset=8 (local.get $at)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $l))))
    (func (export "_start")
      ${
        opens
          ? `(call $put (call $open (i32.const 3) (i32.const 1) (i32.const 100) (i32.const 5) (i32.const 0)
        (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))
      ;; a file it opened (ready once wasmtime's blocking thread has read it)
      (call $fd (i32.const 0) (i32.const 1) (i32.load (i32.const 200)))
      (call $run (i32.const 1))`
          : ""
      }
      ;; stdin, stdout, an hour's clock
      (call $fd (i32.const 0) (i32.const 1) (i32.const 0))
      (call $fd (i32.const 1) (i32.const 2) (i32.const 1))
      (call $clock (i32.const 2) (i64.const 3600000000000))
      (call $run (i32.const 3))
      ;; an fd nobody opened
      (call $fd (i32.const 0) (i32.const 1) (i32.const 99))
      (call $run (i32.const 1))
      ;; a write of stdin
      (call $fd (i32.const 0) (i32.const 2) (i32.const 0))
      (call $run (i32.const 1))
      (i32.store (i32.const 2100) (i32.const 2000))
      (i32.store (i32.const 2104) (i32.sub (global.get $o) (i32.const 2000)))
      (drop (call $write (i32.const 1) (i32.const 2100) (i32.const 1) (i32.const 2108)))))`;

  test.each([true, false])(
    "poll_oneoff with fd subscriptions (opening a file: %p): a file and stdio ready (nbytes 1), not a clock not due; EBADF for an fd that is not open or the wrong way",
    async (opens) => {
      const r = await run(new TextEncoder().encode(pollsWat(opens)), ["polls"]);
      expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: "" });
      expect([...Buffer.from(r.out, "latin1")]).toEqual([
        // the open, the file
        ...(opens ? [0, ...[0, 1, ...[0, 1, 1, 0]]] : []),
        // stdin, stdout; not the hour's clock
        ...[0, 2, ...[0, 1, 1, 0], ...[1, 2, 1, 0]],
        // fd 99; a write of stdin
        ...[8, 0],
        ...[8, 0],
      ]);
    },
  );

  test("fd_close and fd_renumber give their handles back", async () => {
    expect((await run(cycle("close"), ["c"], 8)).code).toBe(0);
    expect((await run(cycle("renumber"), ["r"], 8)).code).toBe(0);
    // The same with a cap of 4 (stdio and the root): the first open fails, EMFILE (33).
    expect((await run(cycle("close"), ["c"], 4)).code).toBe(133);
  });
});
