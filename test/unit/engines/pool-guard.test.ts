// The file guard as a run pool asks it (src/engines/wasmtime/pool-guard.ts): each `ask` of the
// store's trampoline gets its next step, the rules of file-guard.ts deciding, on a real
// directory and a memory of our own standing in for the guest's.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ERRNO_ACCES, ERRNO_MFILE } from "../../../src/engines/wasi-abi.ts";
import { ASK_VALUES, GUARD_KINDS, PooledGuard, TRAMPOLINE_CALLS } from "../../../src/engines/wasmtime/pool-guard.ts";
import { tmp } from "./helpers.ts";

const kind = (name: (typeof GUARD_KINDS)[number]) => GUARD_KINDS.indexOf(name) + 1;
const call = (name: (typeof TRAMPOLINE_CALLS)[number]) => TRAMPOLINE_CALLS.indexOf(name) + 1;
const pad = (v: (number | bigint)[]) => [...v.map((x) => BigInt(x)), ...Array.from({ length: ASK_VALUES - v.length }, () => 0n)];

describe("the pool's file guard", () => {
  let root: string;
  const mem = new Uint8Array(65536);
  const PATH = 1000;
  const FD_OUT = 2000;
  beforeAll(() => {
    root = tmp("bunwasi-pool-guard-");
    mkdirSync(join(root, "d"));
    writeFileSync(join(root, "f"), "x");
    expect(Bun.spawnSync(["mkfifo", join(root, "fifo")]).exitCode).toBe(0);
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** path_open(3, follow, path, …, fd_out) of `path` relative to the root (preopen 3). */
  const open = (g: PooledGuard, path: string) => {
    const bytes = new TextEncoder().encode(path);
    mem.set(bytes, PATH);
    const args = [3, 1, PATH, bytes.length, 0, 0x6002n, 0x6002n, 0, FD_OUT];
    return { args, answer: g.ask(kind("path_open"), 0, pad(args)) };
  };

  test("a fifo: EACCES at once, nothing asked of wasmtime", () => {
    const g = new PooledGuard(
      [root],
      undefined,
      () => mem,
      () => false,
    );
    expect(open(g, "fifo").answer).toEqual({ next: 0, values: pad([ERRNO_ACCES]) });
    g.dispose();
  });

  test("a file: wasmtime's path_open with the guest's arguments, then its errno returned; the cap counts it", () => {
    // 3 stdio + the root: a cap of 5 leaves room for one.
    const g = new PooledGuard(
      [root],
      5,
      () => mem,
      () => false,
    );
    const { args, answer } = open(g, "f");
    expect(answer).toEqual({ next: call("path_open"), values: pad(args) });
    // wasmtime opened it as fd 4.
    new DataView(mem.buffer).setInt32(FD_OUT, 4, true);
    expect(g.ask(0, 0, pad([]))).toEqual({ next: 0, values: pad([0]) });
    // At the cap: EMFILE before anything is looked at.
    expect(open(g, "d").answer).toEqual({ next: 0, values: pad([ERRNO_MFILE]) });
    // A close gives it back (wasmtime's close, its errno returned).
    expect(g.ask(kind("fd_close"), 0, pad([4]))).toEqual({ next: call("fd_close"), values: pad([4]) });
    expect(g.ask(0, 0, pad([]))).toEqual({ next: 0, values: pad([0]) });
    expect(open(g, "d").answer).toMatchObject({ next: call("path_open") });
    g.dispose();
  });

  test("a failed open is the module's errno and counts nothing", () => {
    const g = new PooledGuard(
      [root],
      5,
      () => mem,
      () => false,
    );
    expect(open(g, "missing").answer).toMatchObject({ next: call("path_open") });
    expect(g.ask(0, 44, pad([]))).toEqual({ next: 0, values: pad([44]) });
    expect(open(g, "f").answer).toMatchObject({ next: call("path_open") });
    g.dispose();
  });

  test("reads and writes of stdio are the pool's, of anything else wasmtime's; a renumber moves stdio, a close ends it", () => {
    const g = new PooledGuard(
      [root],
      undefined,
      () => mem,
      () => false,
    );
    const io = [10, 1, 20];
    expect(g.ask(kind("fd_read"), 0, pad([0, ...io]))).toEqual({ pool: 0, args: [0, ...io] });
    expect(g.ask(kind("fd_write"), 0, pad([2, ...io]))).toEqual({ pool: 2, args: [2, ...io] });
    // Reading stdout is no stdio read of the pool's.
    expect(g.ask(kind("fd_read"), 0, pad([1, ...io]))).toMatchObject({ next: call("fd_read") });
    expect(g.ask(0, 8, pad([]))).toEqual({ next: 0, values: pad([8]) });
    expect(g.ask(kind("fd_write"), 0, pad([5, ...io]))).toEqual({ next: call("fd_write"), values: pad([5, ...io]) });
    expect(g.ask(0, 0, pad([]))).toEqual({ next: 0, values: pad([0]) });
    // fd_renumber(1, 5): stdout is 5 now, 1 is no more.
    expect(g.ask(kind("fd_renumber"), 0, pad([1, 5]))).toEqual({ next: call("fd_renumber"), values: pad([1, 5]) });
    expect(g.ask(0, 0, pad([]))).toEqual({ next: 0, values: pad([0]) });
    expect(g.ask(kind("fd_write"), 0, pad([5, ...io]))).toEqual({ pool: 1, args: [5, ...io] });
    expect(g.ask(kind("fd_write"), 0, pad([1, ...io]))).toMatchObject({ next: call("fd_write") });
    expect(g.ask(0, 8, pad([]))).toMatchObject({ next: 0 });
    // A failed close changes nothing; a closed stderr is wasmtime's (which says EBADF).
    expect(g.ask(kind("fd_close"), 0, pad([2]))).toMatchObject({ next: call("fd_close") });
    expect(g.ask(0, 8, pad([]))).toEqual({ next: 0, values: pad([8]) });
    expect(g.ask(kind("fd_write"), 0, pad([2, ...io]))).toMatchObject({ pool: 2 });
    expect(g.ask(kind("fd_close"), 0, pad([2]))).toMatchObject({ next: call("fd_close") });
    expect(g.ask(0, 0, pad([]))).toEqual({ next: 0, values: pad([0]) });
    expect(g.ask(kind("fd_write"), 0, pad([2, ...io]))).toMatchObject({ next: call("fd_write") });
    g.dispose();
  });

  test("an ask it cannot place throws (the pool traps the guest with it)", () => {
    const g = new PooledGuard(
      [root],
      undefined,
      () => mem,
      () => false,
    );
    expect(() => g.ask(0, 0, pad([]))).toThrow("no call in progress");
    expect(() => g.ask(99, 0, pad([]))).toThrow("has no call 99");
    g.dispose();
  });
});
