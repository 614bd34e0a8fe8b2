// A run pool's thread: drives many stores, one core module each, through wasmtime's async C
// API (./pool.ts starts these threads and hands them runs). One JS VM for many runs, where a
// run of its own (./worker.ts) costs a VM per container.
//
// Each run's wasm runs on a fiber of wasmtime's until it yields: at an epoch tick (the engine
// ticks while a pooled run exists, so that a busy module leaves the thread to the others), or
// in a host call that would wait (poll_oneoff, fd_read of stdin, fd_write of stdout/stderr,
// proc_exit). No JavaScript may run on a fiber, so those host functions and the epoch callback
// are native (../native/pool-host.c): a call parks in its store's slot, the poll returns, and
// this thread does the call's work here, on the guest's memory (which cannot move while its
// guest waits), waiting without blocking: a timer for a sleep, a wake from the engine when the
// daemon's stdin relay wrote or closed, a retry for an output nobody drains. The answer goes
// into the slot, and the next poll hands it to wasmtime.
//
// Per run, what a thread of its own gives: a kill drops the run's future at once, wherever it
// is (a busy module is unwound by its epoch callback); a paused run is not polled; its memory
// limit is its store's; its CPU time is the sum of its poll slices (this thread's CPU clock
// around each), its quota held by delaying its next slice; its memory figure is published at
// each epoch callback and each park; a new memory limit (Update) is set on its store before
// its next slice.

import { dlopen, FFIType, type Pointer, ptr, toArrayBuffer } from "bun:ffi";
import { closeSync, constants, openSync, readSync, writeSync } from "node:fs";
import { EXIT_ENGINE_ERROR } from "../engine.ts";
import { ERRNO_BADF, ERRNO_INVAL, ERRNO_IO, ERRNO_NOMEM, ERRNO_PIPE, EVENT_SIZE, SUBSCRIPTION_SIZE, WASI_MODULE } from "../wasi-abi.ts";
import { CpuBucket } from "./cpu-throttle.ts";
import { check, defineHost, errorMessage, instanceExport, LAYOUT, readPtr, type WasmtimeLib, wasmtime } from "./ffi.ts";
import { clockOnlyWait, type GuestClock, guestClocks, writeClockEvents } from "./interruptible.ts";
import { outcomeOf } from "./outcome.ts";
import { ASK_PARAMS, ASK_RESULTS, ASK_VALUES, FORWARDER_WAT, GUARD_KINDS, PooledGuard, TRAMPOLINE_WAT } from "./pool-guard.ts";
import { stdioPoll } from "./pool-poll.ts";
import { FairQueue } from "./pool-queue.ts";
import type { RunRequest, RunStats } from "./protocol.ts";
import {
  BLOCKED,
  CPU_CHECKS,
  CPU_NS,
  CPU_PERIOD,
  CPU_QUOTA,
  CPU_SHARES,
  CPU_THROTTLED,
  KILL,
  PAUSED,
  publishMemory,
  THROTTLED_NS,
} from "./run-atomics.ts";
import { compile, loadModule, reportMessage } from "./run-module.ts";
import { EngineError, openStore } from "./store.ts";

declare const self: Worker;

/** Main thread → pool. */
export type PoolMessage =
  | { type: "init"; libPath: string; poolLib: string; dropFileCaps: boolean }
  | { type: "run"; id: number; req: RunRequest }
  /**
   * Something changed for run `id`: killed, resumed, or (`stdin`) its stdin's feeder connected
   * or wrote ("news"), or will write no more ("ended": an empty read is its end from then on).
   */
  | { type: "wake"; id: number; stdin?: "news" | "ended" };

/** Pool → main thread. */
export type PoolReply =
  | { type: "exit"; id: number; code: number; message?: string; stats: RunStats }
  | { type: "serialized"; id: number; bytes: Uint8Array }
  | { type: "failed"; message: string }
  /** The pool thread's Linux id, its first message (./run-threads.ts counts it until that thread is gone). */
  | { type: "thread"; tid: number };

/** The slot of a store (struct slot_t of ../native/pool-host.c): where its fields are. */
const POOL_SLOT = {
  /** Indexes of its int32 words. */
  i32: { op: 0, state: 1, result: 2, trap: 3 },
  /** Indexes of its int64 words. */
  i64: { args: 5, answers: 17, memBase: 29, memLen: 30, words: 34, memory: 35 },
  /** Its trap message: byte offset, most bytes. */
  trapMsg: { at: 288, max: 200 },
  bytes: 488,
} as const;
/** What its `state` says. */
const PARKED = 0;
const ANSWERED = 1;

/** The host functions a pool serves itself (the env id each is defined with). */
export const POOL_CALLS = { proc_exit: 1, poll_oneoff: 2, fd_read: 3, fd_write: 4 } as const;
/** The env id of the file guard's `bunwasi.ask` (./pool-guard.ts). */
const GUARD_ASK = 5;

/** Longest wait between two tries of an output nobody drains (ms): it starts at 1 and doubles. */
const WRITE_RETRY_MAX_MS = 100;
/**
 * The most one fd_write or fd_read takes of what it asks, in bytes and in iovecs (a short
 * write or read, which WASI allows: the guest goes on with its next call). What a run holds of
 * the daemon's memory while its output waits is this much, whatever its iovecs ask (4096
 * iovecs over one 64 KiB page ask 256 MiB).
 */
const IO_MAX_BYTES = 65536;
const IO_MAX_IOVECS = 1024;
/** Longest wait between two tries of stdin when no wake comes (a caller without a relay). */
const READ_RETRY_MAX_MS = 1000;
/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

type Native = ReturnType<typeof openNative>;

function openNative(path: string) {
  const { ptr: p, i32 } = FFIType;
  const usize = "usize" as const;
  return dlopen(path, {
    bunwasi_pool_init: { args: [p, p, p, p, p, p], returns: FFIType.void },
    bunwasi_pool_env: { args: [p, i32], returns: p },
    bunwasi_pool_slot_size: { args: [], returns: usize },
    bunwasi_pool_host_ptr: { args: [], returns: p },
    bunwasi_pool_env_free_ptr: { args: [], returns: p },
    bunwasi_pool_deadline_ptr: { args: [], returns: p },
  }).symbols;
}

interface PoolRun {
  id: number;
  req: RunRequest;
  words: Int32Array;
  big: BigInt64Array;
  slot: SharedArrayBuffer;
  i32: Int32Array;
  i64: BigInt64Array;
  keep: unknown[];
  module: Pointer | null;
  store: Pointer | null;
  ctx: Pointer | null;
  linker: Pointer | null;
  future: Pointer | null;
  /** Applies an Update's new memory limit to its store (RunStore.followLimit). */
  followLimit: () => void;
  phase: "instantiate" | "call";
  instance: Buffer;
  /** Its entry export, once instantiated (the call's future points at it). */
  entry?: Buffer;
  trapOut: BigUint64Array;
  errOut: BigUint64Array;
  stats: RunStats;
  startedAt: number;
  /** Our own ends of its stdio (non-blocking): stdin, stdout, stderr; -1 when none. */
  fds: [number, number, number];
  /** queued to run, waiting on a host call, paused (not polled), over */
  state: "queued" | "waiting" | "paused" | "done";
  timer?: ReturnType<typeof setTimeout>;
  /** A read of stdin waiting for input (retried at each wake). */
  stdinRead?: () => void;
  readRetryMs: number;
  /** The clocks its guest reads, for absolute poll deadlines (./interruptible.ts). */
  clock: GuestClock;
  /** stdin's feeder has connected (RunRequest.stdinNews): an empty read is EOF from now on. */
  stdinLive: boolean;
  /** stdin's feeder will write no more: a read that would wait is its end (its writer may close later). */
  stdinEnded: boolean;
  cpuNs: number;
  /** Its CPU time weighted by its shares, which orders the pool's polls (./pool-queue.ts). */
  vruntime: number;
  bucket?: { limits: string; bucket: CpuBucket };
  /** The file guard of a module that opens files (RunRequest.fileGuard): its rules, and the forwarder its trampoline fills. */
  guard?: { rules: PooledGuard; forwarder: Buffer; askValues: BigInt64Array };
  /**
   * The parked call is the guard's `ask` for a read or write of stdio the pool serves: its
   * arguments are these, and its errno is answered as the trampoline's "return" (./pool-guard.ts).
   */
  asked?: number[];
}

let lib: WasmtimeLib;
let native: Native;
let engine: Pointer;
const runs = new Map<number, PoolRun>();
/** The runs ready for a slice, polled by the least CPU time weighted by shares (./pool-queue.ts). */
const queue = new FairQueue<PoolRun>();
let stepping = false;
let threadCpuNs: () => number = () => 0;

function post(m: PoolReply): void {
  self.postMessage(m);
}

function init(m: Extract<PoolMessage, { type: "init" }>): void {
  lib = wasmtime(m.libPath).lib;
  native = openNative(m.poolLib);
  if (Number(native.bunwasi_pool_slot_size()) !== POOL_SLOT.bytes) throw new Error("libbunwasi-pool: its slot is not this engine's");
  const fn = (f: unknown) => (f as { ptr: Pointer }).ptr;
  native.bunwasi_pool_init(
    fn(lib.wasmtime_caller_export_get),
    fn(lib.wasmtime_caller_context),
    fn(lib.wasmtime_memory_data),
    fn(lib.wasmtime_memory_data_size),
    fn(lib.wasmtime_error_new),
    fn(lib.wasmtime_trap_new),
  );
  const libc = require("../../linux/libc.ts") as typeof import("../../linux/libc.ts");
  post({ type: "thread", tid: libc.gettid() });
  threadCpuNs = () => libc.threadCpuNs();
  // Before any module touches a file: as a run thread of its own does (./worker.ts).
  if (m.dropFileCaps) {
    const [r, e] = libc.dropCapabilitiesThisThread(libc.FILE_CAPABILITIES);
    if (r < 0) throw new Error(`cannot give up the pool thread's file capabilities: ${libc.strerror(e)}`);
  }
}

/** Opens our own non-blocking end of a stdio path (a fifo's open then never waits), or -1. */
function ownEnd(path: string | null, write: boolean): number {
  if (path === null) return -1;
  try {
    return openSync(path, (write ? constants.O_WRONLY : constants.O_RDONLY) | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch {
    return -1;
  }
}

function start(id: number, req: RunRequest): void {
  const slot = new SharedArrayBuffer(POOL_SLOT.bytes);
  const run: PoolRun = {
    id,
    req,
    words: new Int32Array(req.kill),
    big: new BigInt64Array(req.kill),
    slot,
    i32: new Int32Array(slot),
    i64: new BigInt64Array(slot),
    keep: [],
    module: null,
    store: null,
    ctx: null,
    linker: null,
    future: null,
    followLimit: () => {},
    phase: "instantiate",
    instance: Buffer.alloc(LAYOUT.instance.size),
    trapOut: new BigUint64Array(1),
    errOut: new BigUint64Array(1),
    stats: { instantiateMs: 0, runMs: 0 },
    startedAt: performance.now(),
    fds: [-1, -1, -1],
    state: "queued",
    readRetryMs: 1,
    clock: guestClocks(process.hrtime.bigint()),
    stdinLive: !req.stdinNews,
    stdinEnded: false,
    cpuNs: 0,
    vruntime: 0,
  };
  runs.set(id, run);
  try {
    const slotPtr = ptr(slot);
    run.i64[POOL_SLOT.i64.words] = BigInt(ptr(run.words));
    run.module = loadModule(
      lib,
      engine,
      req,
      (m) => m.type === "serialized" && post({ type: "serialized", id, bytes: m.bytes }),
      run.stats,
    );
    // The file guard adds two instances (its forwarder and trampoline) and the forwarder's table.
    const opened = openStore(lib, engine, req, run.words, run.keep, req.fileGuard ? 2 : 0, {
      deadline: native.bunwasi_pool_deadline_ptr() as Pointer,
      slot: slotPtr,
      ...(req.fileGuard ? { hostTableSize: GUARD_TABLE_SIZE } : {}),
    });
    run.store = opened.store;
    run.ctx = opened.ctx;
    run.clock = guestClocks(process.hrtime.bigint()); // its WASI context was just made
    run.followLimit = opened.followLimit;
    if (Atomics.load(run.words, KILL) !== 0) {
      end(run, 128 + Atomics.load(run.words, KILL));
      return;
    }
    run.fds = [ownEnd(req.stdin, false), ownEnd(req.stdout, true), ownEnd(req.stderr, true)];
    const linker = lib.wasmtime_linker_new(engine) as Pointer;
    run.linker = linker;
    check(lib, lib.wasmtime_linker_define_wasi(linker), "define wasi");
    lib.wasmtime_linker_allow_shadowing(linker, true);
    for (const [name, op] of Object.entries(POOL_CALLS)) defineParked(linker, name, op, slotPtr);
    if (req.fileGuard) linkGuard(run, linker);
    run.future = lib.wasmtime_linker_instantiate_async(linker, run.ctx, run.module, run.instance, run.trapOut, run.errOut) as Pointer;
    enqueue(run);
  } catch (e) {
    failed(run, e);
  }
}

/** The types of the calls a pool serves: [params, results]. */
const I32 = (n: number) => Array.from({ length: n }, () => "i32" as const);
const TYPES: Record<string, [("i32" | "i64")[], ("i32" | "i64")[]]> = {
  proc_exit: [I32(1), []],
  poll_oneoff: [I32(4), I32(1)],
  fd_read: [I32(4), I32(1)],
  fd_write: [I32(4), I32(1)],
  ask: [ASK_PARAMS, ASK_RESULTS],
};

function defineParked(linker: Pointer, name: string, op: number, slotPtr: Pointer, module = WASI_MODULE): void {
  const [params, results] = TYPES[name] as [("i32" | "i64")[], ("i32" | "i64")[]];
  // Parked in the slot by the native host function; its env (the slot and op) freed with the linker.
  const host = {
    callback: native.bunwasi_pool_host_ptr() as Pointer,
    env: native.bunwasi_pool_env(slotPtr, op) as Pointer,
    finalizer: native.bunwasi_pool_env_free_ptr() as Pointer,
    async: true,
  };
  defineHost(lib, linker, module, name, { params, results }, host);
}

/** Elements of the guard's forwarder table (./pool-guard.ts). */
const GUARD_TABLE_SIZE = GUARD_KINDS.length;
/** The guard's two modules, compiled once per pool thread (an engine's modules serve any of its stores). */
let guardModules: { forwarder: Pointer; trampoline: Pointer } | undefined;

const compileWat = (text: string): Pointer => compile(lib, engine, Buffer.from(text), "wat");

/**
 * Instantiates a module without a start function in the run's store at once: its future runs
 * no guest code and calls no host function, but may yield at the store's epoch deadline (its
 * callback is the pool's), so it is polled until done.
 */
function instantiateNow(run: PoolRun, linker: Pointer, module: Pointer, what: string): Buffer {
  const instance = Buffer.alloc(LAYOUT.instance.size);
  const trapOut = new BigUint64Array(1);
  const errOut = new BigUint64Array(1);
  const future = lib.wasmtime_linker_instantiate_async(linker, run.ctx, module, instance, trapOut, errOut) as Pointer;
  try {
    while (!lib.wasmtime_call_future_poll(future)) {}
  } finally {
    lib.wasmtime_call_future_delete(future);
  }
  const err = readPtr(errOut) as Pointer | null;
  if (err) {
    const msg = errorMessage(lib, err);
    lib.wasmtime_error_delete(err);
    throw new Error(`${what}: ${msg}`);
  }
  if (readPtr(trapOut)) throw new Error(`${what}: trapped at its instantiation`);
  run.keep.push(instance);
  return instance;
}

function exportOf(run: PoolRun, instance: Buffer, name: string): Buffer {
  const ext = instanceExport(lib, run.ctx as Pointer, instance, name);
  if (!ext) throw new Error(`the file guard has no ${name}`);
  run.keep.push(ext);
  return ext;
}

/**
 * The file guard's first half, before the guest is instantiated: its forwarder in the store,
 * its path_open, fd_close and fd_renumber the guest's (./pool-guard.ts).
 */
function linkGuard(run: PoolRun, linker: Pointer): void {
  guardModules ??= { forwarder: compileWat(FORWARDER_WAT), trampoline: compileWat(TRAMPOLINE_WAT) };
  const empty = lib.wasmtime_linker_new(engine) as Pointer;
  let forwarder: Buffer;
  try {
    forwarder = instantiateNow(run, empty, guardModules.forwarder, "the file guard's forwarder");
  } finally {
    lib.wasmtime_linker_delete(empty);
  }
  const mod = Buffer.from(WASI_MODULE);
  for (const name of GUARD_KINDS) {
    const fn = Buffer.from(name);
    check(
      lib,
      lib.wasmtime_linker_define(linker, run.ctx, mod, mod.length, fn, fn.length, exportOf(run, forwarder, name)) as Pointer | null,
      `define ${WASI_MODULE}.${name}`,
    );
  }
  const preopens = [...(run.req.rootDir !== undefined ? [run.req.rootDir] : []), ...(run.req.preopens ?? []).map(([host]) => host)];
  run.guard = {
    rules: new PooledGuard(
      preopens,
      run.req.maxOpenFiles,
      () => guestMemory(run),
      () => Atomics.load(run.words, KILL) !== 0,
    ),
    forwarder,
    askValues: run.i64.subarray(POOL_SLOT.i64.args + 2, POOL_SLOT.i64.args + 2 + ASK_VALUES),
  };
}

/**
 * Its second half, once the guest is instantiated (before its entry runs): the trampoline, on
 * the guest's memory, fills the forwarder's table.
 */
function finishGuard(run: PoolRun, guestMemoryExtern: Buffer | undefined): void {
  const guard = run.guard;
  if (!guard || !guardModules) return;
  if (!guestMemoryExtern) throw new EngineError('the module exports no memory named "memory" (the file guard needs it)');
  const l = lib.wasmtime_linker_new(engine) as Pointer;
  try {
    check(lib, lib.wasmtime_linker_define_wasi(l), "define wasi");
    defineParked(l, "ask", GUARD_ASK, ptr(run.slot), "bunwasi");
    const env = Buffer.from("env");
    for (const [name, ext] of [
      ["memory", guestMemoryExtern],
      ["guard", exportOf(run, guard.forwarder, "guard")],
    ] as const) {
      const n = Buffer.from(name);
      check(lib, lib.wasmtime_linker_define(l, run.ctx, env, env.length, n, n.length, ext) as Pointer | null, `define env.${name}`);
    }
    instantiateNow(run, l, guardModules.trampoline, "the file guard's trampoline");
  } finally {
    lib.wasmtime_linker_delete(l);
  }
}

/** The file guard's `ask` (./pool-guard.ts): its rule's next step, or a trap if the rule failed. */
function guardAsk(run: PoolRun): void {
  const guard = run.guard;
  try {
    if (!guard) throw new Error("this run has no file guard");
    const a = guard.rules.ask(
      Number(run.i64[POOL_SLOT.i64.args] as bigint),
      Number(BigInt.asIntN(32, run.i64[POOL_SLOT.i64.args + 1] as bigint)),
      guard.askValues,
    );
    if ("pool" in a) {
      // A read or write of its stdio, a poll of clocks and stdio: served as in any pooled store, its errno the trampoline's return.
      run.asked = a.args;
      if (a.pool === "poll") pollOneoff(run, guestMemory(run));
      else if (a.pool === 0) fdRead(run, 0);
      else fdWrite(run, guestMemory(run), a.pool);
      return;
    }
    a.values.forEach((v, j) => {
      run.i64[POOL_SLOT.i64.answers + j] = BigInt.asIntN(64, v);
    });
    answer(run, a.next);
  } catch (e) {
    trapAnswer(run, `file guard: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * Ends the parked call with a trap carrying `message` at the next poll (the guest is unwound,
 * its run ends 134): a failed guard rule, or a pointer past the guest's memory, as wasmtime's
 * own WASI answers that.
 */
function trapAnswer(run: PoolRun, message: string): void {
  const bytes = new Uint8Array(run.slot, POOL_SLOT.trapMsg.at, POOL_SLOT.trapMsg.max);
  bytes.fill(0);
  bytes.set(new TextEncoder().encode(message).subarray(0, POOL_SLOT.trapMsg.max - 1));
  run.i32[POOL_SLOT.i32.trap] = 1;
  answer(run, 0);
}

function enqueue(run: PoolRun): void {
  if (run.state === "done") return;
  if (Atomics.load(run.words, PAUSED) !== 0) {
    run.state = "paused";
    return;
  }
  run.state = "queued";
  queue.push(run);
  if (!stepping) {
    stepping = true;
    setImmediate(step);
  }
}

/** Polls the queued run that is owed the thread most for one slice; then gives the event loop a turn (kills, wakes, timers). */
function step(): void {
  const run = queue.take();
  if (run && run.state === "queued") {
    try {
      slice(run);
    } catch (e) {
      failed(run, e);
    }
  }
  if (queue.size > 0) setImmediate(step);
  else stepping = false;
}

function slice(run: PoolRun): void {
  const sig = Atomics.load(run.words, KILL);
  if (sig !== 0) {
    end(run, 128 + sig);
    return;
  }
  // Its store is not running between two polls: an Update's memory limit is set here, and
  // holds for every grow from this slice on (none can happen while it is not polled).
  run.followLimit();
  Atomics.store(run.words, BLOCKED, 0);
  const c0 = threadCpuNs();
  const done = lib.wasmtime_call_future_poll(run.future as Pointer);
  Atomics.store(run.words, BLOCKED, 1);
  if (done) {
    charge(run, c0);
    phaseDone(run);
    return;
  }
  const op = run.i32[POOL_SLOT.i32.op] as number;
  if (op !== 0 && run.i32[POOL_SLOT.i32.state] === PARKED) {
    // The call's work here is the run's CPU time as much as its wasm is (a module that
    // sleeps 0 in a loop spends most of its time in this thread's answers).
    try {
      hostCall(run, op);
    } finally {
      charge(run, c0);
    }
    return;
  }
  charge(run, c0);
  requeue(run);
}

/** Counts this thread's CPU time since `c0` to the run (Stats' CPU, its quota, its place by shares). */
function charge(run: PoolRun, c0: number): void {
  const used = threadCpuNs() - c0;
  run.cpuNs += used;
  FairQueue.charge(run, used, Atomics.load(run.words, CPU_SHARES));
  Atomics.store(run.big, CPU_NS, BigInt(run.cpuNs));
}

/**
 * Runs `f` for the run outside its slice (a timer's or a wake's continuation of its host
 * call): its CPU time is the run's, and a throw ends that run only, never the pool thread
 * (an uncaught error would end every run the thread holds).
 */
function forRun(run: PoolRun, f: () => void): void {
  if (run.state === "done") return;
  const c0 = threadCpuNs();
  try {
    f();
  } catch (e) {
    failed(run, e);
  } finally {
    charge(run, c0);
  }
}

/** Back in the queue (an epoch yield, an answered call), after its quota's delay if it is over it. */
function requeue(run: PoolRun): void {
  if (run.state === "done") return;
  const delay = throttle(run);
  if (delay > 0) {
    run.state = "waiting";
    run.timer = setTimeout(() => {
      Atomics.add(run.big, THROTTLED_NS, BigInt(Math.round(delay * 1e6)));
      enqueue(run);
    }, delay);
  } else enqueue(run);
}

/** How long (ms) the run must wait before its next slice to stay within its CPU quota; 0 for none. */
function throttle(run: PoolRun): number {
  const quota = Atomics.load(run.words, CPU_QUOTA);
  const period = Atomics.load(run.words, CPU_PERIOD);
  if (quota <= 0 || period <= 0) {
    run.bucket = undefined;
    return 0;
  }
  const limits = `${quota}/${period}`;
  const wall = performance.now() * 1e6;
  if (run.bucket?.limits !== limits) run.bucket = { limits, bucket: new CpuBucket(quota * 1000, period * 1000, wall, run.cpuNs) };
  Atomics.add(run.words, CPU_CHECKS, 1);
  const ns = run.bucket.bucket.debt(wall, run.cpuNs);
  if (ns <= 0) return 0;
  Atomics.add(run.words, CPU_THROTTLED, 1);
  return Math.min(ns, period * 1000) / 1e6;
}

function phaseDone(run: PoolRun): void {
  lib.wasmtime_call_future_delete(run.future as Pointer);
  run.future = null;
  const err = readPtr(run.errOut);
  const trap = readPtr(run.trapOut);
  if (run.phase === "instantiate") {
    run.stats.instantiateMs = performance.now() - run.startedAt;
    if (err && !trap && Atomics.load(run.words, KILL) === 0) {
      const msg = errorMessage(lib, err);
      lib.wasmtime_error_delete(err);
      end(run, EXIT_ENGINE_ERROR, `link: ${msg}`);
      return;
    }
    const outcome = outcomeOf(lib, err, trap, run.words, undefined);
    if (outcome) {
      end(run, outcome.code, outcome.message);
      return;
    }
    // The linker is not needed any more: the instance holds what it took from it.
    lib.wasmtime_linker_delete(run.linker as Pointer);
    run.linker = null;
    const ctx = run.ctx as Pointer;
    const mem = instanceExport(lib, ctx, run.instance, "memory", LAYOUT.externKindMemory);
    if (mem) {
      run.keep.push(mem);
      run.i64[POOL_SLOT.i64.memory] = BigInt(ptr(mem));
      publishMemory(run.words, Number(lib.wasmtime_memory_data_size(ctx, (ptr(mem) + LAYOUT.extern.of) as Pointer)));
    }
    finishGuard(run, mem);
    const entry = instanceExport(lib, ctx, run.instance, run.req.entry, LAYOUT.externKindFunc);
    if (!entry) {
      end(run, EXIT_ENGINE_ERROR, `module has no exported function "${run.req.entry}"`);
      return;
    }
    run.entry = entry;
    run.phase = "call";
    run.startedAt = performance.now();
    run.trapOut[0] = 0n;
    run.errOut[0] = 0n;
    run.future = lib.wasmtime_func_call_async(
      ctx,
      (ptr(entry) + LAYOUT.extern.of) as Pointer,
      null,
      0,
      null,
      0,
      run.trapOut,
      run.errOut,
    ) as Pointer;
    enqueue(run);
    return;
  }
  run.stats.runMs = performance.now() - run.startedAt;
  const outcome = outcomeOf(lib, err, trap, run.words, undefined);
  end(run, outcome?.code ?? 0, outcome?.message);
}

/** The guest's memory as it was when its call parked. */
function guestMemory(run: PoolRun): Uint8Array {
  const len = Number(run.i64[POOL_SLOT.i64.memLen]);
  return len ? new Uint8Array(toArrayBuffer(Number(run.i64[POOL_SLOT.i64.memBase]) as Pointer, 0, len)) : new Uint8Array(0);
}

function arg(run: PoolRun, i: number): number {
  if (run.asked) return (run.asked[i] as number) >>> 0;
  return Number(BigInt.asUintN(32, run.i64[POOL_SLOT.i64.args + i] as bigint));
}

/** Hands the parked call its errno at the next poll (a paused run stays unpolled until resumed). */
function answer(run: PoolRun, errno: number): void {
  if (run.asked) {
    // The guard's `ask`: "return errno" (./pool-guard.ts).
    run.asked = undefined;
    run.i64[POOL_SLOT.i64.answers] = BigInt(errno);
    errno = 0;
  }
  run.i32[POOL_SLOT.i32.result] = errno;
  run.i32[POOL_SLOT.i32.state] = ANSWERED;
  run.timer = undefined;
  run.stdinRead = undefined;
  requeue(run);
}

/** Whether `len` bytes at `at` lie inside the guest's memory (pointers are the guest's: u32). */
function inside(mem: Uint8Array, at: number, len: number): boolean {
  return at + len <= mem.length;
}

/**
 * Checks a call's pointers before it waits (its memory cannot move or shrink while it waits,
 * so what its answer writes later fits): an array larger than 4 GiB is ENOMEM, a region past
 * the guest's memory a trap, as wasmtime's own WASI answers both. True if the call may go on.
 */
function pointersFit(run: PoolRun, call: string, mem: Uint8Array, arrays: [number, number][], regions: [number, number][]): boolean {
  if (arrays.some(([, len]) => len > 2 ** 32)) {
    answer(run, ERRNO_NOMEM);
    return false;
  }
  const bad = [...arrays, ...regions].find(([at, len]) => !inside(mem, at, len));
  if (!bad) return true;
  trapAnswer(run, `${call}: pointer out of bounds: ${bad[1]} bytes at ${bad[0]}, memory of ${mem.length}`);
  return false;
}

function hostCall(run: PoolRun, op: number): void {
  run.state = "waiting";
  const mem = guestMemory(run);
  // Waiting, the module cannot grow: the figure published now holds until it runs again.
  publishMemory(run.words, mem.length);
  if (op === POOL_CALLS.proc_exit) {
    end(run, arg(run, 0) & 0xff);
    return;
  }
  if (op === POOL_CALLS.poll_oneoff) {
    pollOneoff(run, mem);
    return;
  }
  if (op === POOL_CALLS.fd_read) {
    fdRead(run, arg(run, 0));
    return;
  }
  if (op === POOL_CALLS.fd_write) {
    fdWrite(run, mem, arg(run, 0));
    return;
  }
  if (op === GUARD_ASK) {
    guardAsk(run);
    return;
  }
  answer(run, ERRNO_BADF);
}

/**
 * poll_oneoff: clocks only (sleep, nanosleep; an absolute deadline on the realtime or
 * monotonic clock until it comes on that clock) wait on a timer. With fd subscriptions (all on
 * the guest's stdio here: ./pool-guard.ts sends a poll of a file to wasmtime's own), wasmtime's
 * answer (./pool-poll.ts): each ready at once, or EBADF.
 */
function pollOneoff(run: PoolRun, mem: Uint8Array): void {
  const [inPtr, outPtr, n, neventsPtr] = [0, 1, 2, 3].map((i) => arg(run, i)) as [number, number, number, number];
  if (n === 0) {
    answer(run, ERRNO_INVAL);
    return;
  }
  const subs: [number, number][] = [
    [inPtr, n * SUBSCRIPTION_SIZE],
    [outPtr, n * EVENT_SIZE],
  ];
  if (!pointersFit(run, "poll_oneoff", mem, subs, [[neventsPtr, 4]])) return;
  const wait = clockOnlyWait(mem, inPtr, n, run.clock);
  if (wait) {
    // Whole milliseconds, rounded up: a timer truncates a fraction, and a wait must not end early.
    let left = Math.ceil(Number(wait.timeoutNs) / 1e6);
    const due = () => {
      if (left > MAX_TIMER_MS) {
        left -= MAX_TIMER_MS;
        run.timer = setTimeout(() => forRun(run, due), MAX_TIMER_MS);
        return;
      }
      const m = guestMemory(run);
      const count = writeClockEvents(m, outPtr, wait.due);
      new DataView(m.buffer, m.byteOffset, m.byteLength).setUint32(neventsPtr, count, true);
      answer(run, 0);
    };
    if (left <= 0) {
      due();
      return;
    }
    const first = Math.min(left, MAX_TIMER_MS);
    left -= first;
    run.timer = setTimeout(() => forRun(run, due), first);
    return;
  }
  // Anything else has an fd subscription, or is what clockOnlyWait leaves: clocks only, one of
  // them absolute on a CPU-time clock, or a subscription of no kind WASI knows. stdioPoll
  // refuses the latter two with EINVAL, as wasmtime's WASI does (a clock of another id or an
  // unknown tag is EINVAL there, whatever else the poll holds).
  const r = stdioPoll(mem, inPtr, outPtr, n, (fd) =>
    run.guard ? run.guard.rules.stdioRole(fd) : fd === 0 || fd === 1 || fd === 2 ? fd : undefined,
  );
  if (r.errno === 0) new DataView(mem.buffer, mem.byteOffset, mem.byteLength).setUint32(neventsPtr, r.count, true);
  answer(run, r.errno);
}

/**
 * The iovecs of a read or write ([pointer, length] each, 8 bytes: u32, u32; the array checked
 * by the caller), read one at a time: there may be as many as the guest's memory holds. At
 * most IO_MAX_BYTES and IO_MAX_IOVECS of them (the iovecs past those are not looked at); the
 * first one past the guest's memory alone, if one is.
 */
function iovecs(mem: Uint8Array, at: number, n: number): [number, number][] {
  const v = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  const out: [number, number][] = [];
  const max = IO_MAX_BYTES;
  let total = 0;
  for (let i = 0; i < n && total < max && out.length < IO_MAX_IOVECS; i++) {
    const buf = v.getUint32(at + i * 8, true);
    const len = v.getUint32(at + i * 8 + 4, true);
    if (!inside(mem, buf, len)) return [[buf, len]]; // the caller's check finds it past the memory
    if (len === 0) continue;
    out.push([buf, Math.min(len, max - total)]);
    total += len;
  }
  return out;
}

/** fd_read of stdin (`fd`: which of its stdio the guest's fd is) from our non-blocking end; empty: wait for the engine's wake (input, EOF, a kill). */
function fdRead(run: PoolRun, fd: number): void {
  const [iovs, iovsLen, nreadPtr] = [1, 2, 3].map((i) => arg(run, i)) as [number, number, number];
  if (fd !== 0 || run.fds[0] < 0) {
    answer(run, ERRNO_BADF);
    return;
  }
  const first = guestMemory(run);
  if (!pointersFit(run, "fd_read", first, [[iovs, iovsLen * 8]], [[nreadPtr, 4]])) return;
  const parts = iovecs(first, iovs, iovsLen);
  if (!pointersFit(run, "fd_read", first, [], parts)) return;
  const attempt = () => {
    const mem = guestMemory(run);
    let total = 0;
    let wouldBlock = false;
    try {
      for (const [buf, len] of parts) {
        const got = readSync(run.fds[0], mem, buf, len, null);
        total += got;
        if (got < len) break;
      }
      // A fifo whose feeder has not connected yet reads empty: not its end.
      wouldBlock = total === 0 && !run.stdinLive;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") {
        answer(run, ERRNO_IO);
        return;
      }
      // Empty and its feeder done: its end, whenever its writer goes.
      wouldBlock = total === 0 && !run.stdinEnded;
    }
    if (wouldBlock) {
      // Nothing yet: a feeder that tells its news (the daemon's relay) wakes us; another is tried again.
      run.stdinRead = () => forRun(run, attempt);
      if (!run.req.stdinNews) {
        run.timer = setTimeout(run.stdinRead, run.readRetryMs);
        run.readRetryMs = Math.min(run.readRetryMs * 2, READ_RETRY_MAX_MS);
      }
      return;
    }
    run.readRetryMs = 1;
    new DataView(mem.buffer, mem.byteOffset, mem.byteLength).setUint32(nreadPtr, total, true);
    answer(run, 0);
  };
  attempt();
}

/** fd_write of stdout or stderr (`fd`: which of its stdio the guest's fd is) to our non-blocking end: what does not fit now is retried until it does. */
function fdWrite(run: PoolRun, mem: Uint8Array, fd: number): void {
  const [iovs, iovsLen, nwrittenPtr] = [1, 2, 3].map((i) => arg(run, i)) as [number, number, number];
  const out = fd === 1 || fd === 2 ? run.fds[fd] : -1;
  if (out === undefined || out < 0) {
    answer(run, ERRNO_BADF);
    return;
  }
  if (!pointersFit(run, "fd_write", mem, [[iovs, iovsLen * 8]], [[nwrittenPtr, 4]])) return;
  const parts = iovecs(mem, iovs, iovsLen);
  if (!pointersFit(run, "fd_write", mem, [], parts)) return;
  const bytes = Buffer.concat(parts.map(([buf, len]) => mem.subarray(buf, buf + len)));
  let done = 0;
  let retryMs = 1;
  const attempt = () => {
    try {
      while (done < bytes.length) {
        done += writeSync(out, bytes, done, bytes.length - done);
        retryMs = 1; // a reader that drains again is not made to wait long
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EAGAIN") {
        run.timer = setTimeout(() => forRun(run, attempt), retryMs);
        retryMs = Math.min(retryMs * 2, WRITE_RETRY_MAX_MS);
        return;
      }
      answer(run, code === "EPIPE" ? ERRNO_PIPE : ERRNO_IO);
      return;
    }
    const m = guestMemory(run);
    new DataView(m.buffer, m.byteOffset, m.byteLength).setUint32(nwrittenPtr, bytes.length, true);
    answer(run, 0);
  };
  attempt();
}

/** Something changed for the run: a kill ends it now; a resume or stdin's news moves it on. */
function wake(id: number, stdin: "news" | "ended" | undefined): void {
  const run = runs.get(id);
  if (!run || run.state === "done") return;
  if (stdin) run.stdinLive = true;
  if (stdin === "ended") run.stdinEnded = true;
  const sig = Atomics.load(run.words, KILL);
  if (sig !== 0) {
    end(run, 128 + sig);
    return;
  }
  if (run.state === "paused" && Atomics.load(run.words, PAUSED) === 0) {
    enqueue(run);
    return;
  }
  if (run.stdinRead) {
    clearTimeout(run.timer);
    run.stdinRead();
  }
}

function failed(run: PoolRun, e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  const known = e instanceof EngineError || /^(compile|deserialize|wat2wasm|wasi|define )/.test(message);
  end(run, EXIT_ENGINE_ERROR, known ? message : `bunwasi: internal error: ${message}`);
}

/** Frees everything of the run (its future first: dropping it unwinds the guest) and reports its exit. */
function end(run: PoolRun, code: number, message?: string): void {
  if (run.state === "done") return;
  run.state = "done";
  clearTimeout(run.timer);
  runs.delete(run.id);
  if (run.future) lib.wasmtime_call_future_delete(run.future);
  if (run.linker) lib.wasmtime_linker_delete(run.linker);
  if (run.store) lib.wasmtime_store_delete(run.store);
  if (run.module) lib.wasmtime_module_delete(run.module);
  run.future = run.linker = run.store = run.module = null;
  for (const fd of run.fds) if (fd >= 0) closeSync(fd);
  run.fds = [-1, -1, -1];
  run.guard?.rules.dispose();
  run.guard = undefined;
  if (message) reportMessage(run.req, message);
  post({ type: "exit", id: run.id, code, ...(message ? { message } : {}), stats: run.stats });
}

if (!Bun.isMainThread) {
  self.onmessage = (ev: MessageEvent<PoolMessage>) => {
    const m = ev.data;
    if (m.type === "init") {
      try {
        init(m);
      } catch (e) {
        post({ type: "failed", message: e instanceof Error ? e.message : String(e) });
      }
    } else if (m.type === "run") {
      engine = m.req.enginePtr as Pointer;
      start(m.id, m.req);
    } else if (m.type === "wake") wake(m.id, m.stdin);
  };
}
