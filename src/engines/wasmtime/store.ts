// The per-run store both run paths share (core modules in ./worker.ts, components in
// ./component.ts): memory limit, the WASI context (one wasi_config_t serves preview 1
// and preview 2 in libwasmtime 48: the store keeps one context and both linkers read it),
// and the epoch-deadline callback that turns a kill into a trap and applies the CPU quota.
//
// The memory limit bounds everything the store makes together: linear memories, tables,
// instances. wasmtime's limiter (wasmtime_store_limiter, the only one of its C API) is per
// memory and per table, plus counts; so the store may make exactly the memories, tables and
// instances the module declares (./wasm-shape.ts), each table holds at most a few thousand
// elements more than it starts with, and each memory gets an equal share of what is left.
// A module that needs more at start than that is refused before it runs (exit 125, saying
// so); a grow past its share fails (memory.grow and table.grow return -1).

import { ptr as bunPtr, JSCallback, type Pointer, toArrayBuffer } from "bun:ffi";
import { CpuThrottle, type ThreadClock } from "./cpu-throttle.ts";
import { check, cstr, cstrArray, LAYOUT, type WasmtimeLib } from "./ffi.ts";
import { interruptibleSleep } from "./interruptible.ts";
import type { RunRequest } from "./protocol.ts";
import { BLOCKED, newMemoryLimit, publishMemory } from "./run-atomics.ts";
import type { WasmShape } from "./wasm-shape.ts";

/** An error before the guest ran (bad module, link error, missing export): exit 125. */
export class EngineError extends Error {}

export interface RunStore {
  store: Pointer;
  ctx: Pointer;
  /** Must outlive the store (wasmtime calls it on the run thread); close after deleting the store. None in a pool. */
  deadlineCb?: JSCallback;
  /**
   * The instance's exported memory (a wasmtime_extern_t), once the run has one: every epoch
   * callback then publishes its size for Stats (./run-atomics.ts).
   */
  memory: { extern?: Buffer };
  /**
   * Applies the memory limit an Update set since the last call, if one did (./run-atomics.ts).
   * Called where the store is not running wasm: its epoch callback, a pool between two polls.
   */
  followLimit(): void;
}

/**
 * A store configured for `req`. `keep` collects buffers C may still read while the run
 * lasts. On error nothing leaks: the store is deleted before the throw. `hostInstances`: the
 * instances the run itself may add to the store besides the module's (a core module's WASI
 * helper, ./wasi-shadows.ts, which makes no memory or table of its own).
 */
export function openStore(
  lib: WasmtimeLib,
  engine: Pointer,
  req: RunRequest,
  kill: Int32Array,
  keep: unknown[],
  hostInstances = 0,
  pooled?: PooledStore,
): RunStore {
  const store = lib.wasmtime_store_new(engine, null, null) as Pointer;
  let deadlineCb: JSCallback | undefined;
  const memory: RunStore["memory"] = {};
  try {
    const ctx = lib.wasmtime_store_context(store) as Pointer;
    // The limit at start (an Update's since the run began, if one came), and each new one an
    // Update sets later, at the epoch callback (the owner checked it: ./engine.ts).
    const limit = (bytes: number | undefined) => {
      if (bytes === undefined) return lib.wasmtime_store_limiter(store, -1n, -1n, -1n, -1n, -1n);
      const l = storeLimits(bytes, req.shape, hostInstances, pooled?.hostTableSize ?? 0);
      lib.wasmtime_store_limiter(
        store,
        BigInt(l.memorySize),
        BigInt(l.tableElements),
        BigInt(l.instances),
        BigInt(l.tables),
        BigInt(l.memories),
      );
    };
    const updated = newMemoryLimit(kill, 0);
    let limitGen = updated?.gen ?? 0;
    if (updated) limit(updated.bytes);
    else if (req.memoryLimitBytes !== undefined && req.memoryLimitBytes >= 0) limit(req.memoryLimitBytes);
    // A new memory limit (Update): grows are held to it from here on.
    const followLimit = () => {
      const next = newMemoryLimit(kill, limitGen);
      if (!next) return;
      limitGen = next.gen;
      try {
        limit(next.bytes);
      } catch {} // refused by the owner before it was set (./engine.ts)
    };
    // takes ownership of the config
    check(lib, lib.wasmtime_context_set_wasi(ctx, wasiConfig(lib, req, keep, !!pooled)), "wasi");
    if (pooled) {
      // A pool's store: its deadline is native (no JavaScript runs on a fiber), its CPU is
      // accounted by the pool per slice, and its new limits are set between two polls (./pool-worker.ts).
      lib.wasmtime_store_epoch_deadline_callback(store, pooled.deadline, pooled.slot, null);
      lib.wasmtime_context_set_epoch_deadline(ctx, 1n);
      return { store, ctx, memory, followLimit };
    }
    // The CPU quota and shares (shared mode; the executor's kill word has no room for them):
    // the shares' nice value from the start, the quota from the first epoch callback on.
    const throttle = CpuThrottle.applies(kill) ? new CpuThrottle(kill, threadClock(kill)) : undefined;
    throttle?.check();

    // Epoch interruption: deadline 1 tick ahead; each tick either kills (this run was
    // aborted) or extends by one tick (another store on the shared engine was the target).
    deadlineCb = new JSCallback(
      (cx: Pointer, _data: Pointer, delta: Pointer, kind: Pointer) => {
        // Any epoch bump (a Stats request among them) refreshes the memory figure.
        if (memory.extern)
          publishMemory(kill, Number(lib.wasmtime_memory_data_size(cx, (bunPtr(memory.extern) + LAYOUT.extern.of) as Pointer)));
        // Over its CPU quota: sleeps here until it is back within it (a kill ends the sleep).
        throttle?.check();
        // Paused: this thread waits here, inside the module, until resumed or killed.
        Atomics.store(kill, BLOCKED, 1);
        while (Atomics.load(kill, 1) !== 0 && Atomics.load(kill, 0) === 0) Atomics.wait(kill, 1, 1);
        Atomics.store(kill, BLOCKED, 0);
        // Last, so that a limit set while this thread was paused or throttled here applies
        // before it runs on (the bump that came with it fell inside this callback and does
        // not bring another).
        followLimit();
        if (Atomics.load(kill, 0) !== 0) {
          return lib.wasmtime_error_new(cstr(`interrupted by signal ${Atomics.load(kill, 0)}`));
        }
        new DataView(toArrayBuffer(delta, 0, 8)).setBigUint64(0, 1n, true);
        new DataView(toArrayBuffer(kind, 0, 1)).setUint8(0, 0); // WASMTIME_UPDATE_DEADLINE_CONTINUE
        return null;
      },
      { args: ["ptr", "ptr", "ptr", "ptr"], returns: "ptr" },
    );
    lib.wasmtime_store_epoch_deadline_callback(store, deadlineCb.ptr as Pointer, null, null);
    lib.wasmtime_context_set_epoch_deadline(ctx, 1n);
    return { store, ctx, deadlineCb, memory, followLimit };
  } catch (e) {
    lib.wasmtime_store_delete(store);
    deadlineCb?.close();
    throw e;
  }
}

/** A store a run pool drives (./pool-worker.ts): its native epoch callback and the slot it is given. */
export interface PooledStore {
  deadline: Pointer;
  slot: Pointer;
  /** Elements of a table the pool adds to the store (the file guard's forwarder, ./pool-guard.ts); absent: none. */
  hostTableSize?: number;
}

/** How many bytes a table element takes in wasmtime at most (a funcref is a pointer). */
export const TABLE_ELEMENT_BYTES = 8;
/** Elements each table may grow by beyond its initial size, where the limit leaves room. */
export const TABLE_ROOM = 10_000;
const PAGE = 65536;

/** What wasmtime_store_limiter is given. */
export interface StoreLimits {
  /** Bytes each linear memory may grow to. */
  memorySize: number;
  /** Elements each table may grow to. */
  tableElements: number;
  instances: number;
  tables: number;
  memories: number;
}

/**
 * The shape assumed for a module whose binary we do not have (precompiled bytes a trusted
 * caller gave): one memory, one table, one instance, as a WASI program has.
 */
const ONE_OF_EACH: WasmShape = { memories: [0], tables: [0], instances: 1 };

const mib = (n: number) => `${(n / 2 ** 20).toFixed(n % 2 ** 20 ? 1 : 0)} MiB`;

/**
 * The limiter's settings that keep all of a store's memories and tables within `limitBytes`
 * together (see the top of this file); throws EngineError when the module needs more at start.
 * `hostInstances` more instances are allowed for the run's own (no memory of theirs), and
 * with `hostTableSize` > 0 one more table of that many elements (so every table may hold as many).
 */
export function storeLimits(limitBytes: number, shape: WasmShape = ONE_OF_EACH, hostInstances = 0, hostTableSize = 0): StoreLimits {
  const limit = Math.max(0, Math.floor(limitBytes));
  const nT = shape.tables.length;
  const nM = shape.memories.length;
  const tableMin = Math.max(0, ...shape.tables);
  const memoryMin = shape.memories.reduce((a, b) => a + b, 0);
  const need = nT * tableMin * TABLE_ELEMENT_BYTES + memoryMin;
  const what = `${nM} linear ${nM === 1 ? "memory" : "memories"} and ${nT} ${nT === 1 ? "table" : "tables"}`;
  if (need > limit) {
    throw new EngineError(
      `memory limit: the module's ${what} need ${mib(need)} at start, more than the container's limit of ${mib(limit)}`,
    );
  }
  const room = nT ? Math.floor((limit - memoryMin) / (nT * TABLE_ELEMENT_BYTES)) : 0;
  const tableElements = nT ? Math.max(tableMin, Math.min(tableMin + TABLE_ROOM, room)) : 0;
  const forMemories = limit - nT * tableElements * TABLE_ELEMENT_BYTES;
  const memorySize = nM ? Math.floor(forMemories / nM / PAGE) * PAGE : 0;
  const largest = Math.max(0, ...shape.memories);
  if (largest > memorySize) {
    throw new EngineError(
      `memory limit: the container's limit of ${mib(limit)} is shared by the module's ${what}, ${mib(memorySize)} for each memory, and one needs ${mib(largest)} at start`,
    );
  }
  return {
    memorySize,
    tableElements: Math.max(tableElements, hostTableSize),
    instances: Math.max(1, shape.instances) + hostInstances,
    tables: nT + (hostTableSize > 0 ? 1 : 0),
    memories: nM,
  };
}

/** The run thread's clocks, nice value and interruptible sleep, for its CPU throttle. */
function threadClock(kill: Int32Array): ThreadClock {
  // Required here: only a run of the daemon has CPU words, and an executor never loads this binding.
  const libc = require("../../linux/libc.ts") as typeof import("../../linux/libc.ts");
  return {
    wallNs: () => performance.now() * 1e6,
    cpuNs: () => libc.threadCpuNs(),
    nice: (n) => void libc.setThreadNice(n),
    sleep: (ns) => interruptibleSleep(kill, BigInt(ns)),
  };
}

/**
 * A wasi_config_t with the run's argv, env, root preopen and stdio. `ownStdin`: the caller
 * reads stdin itself (a pool: the open of a fifo could wait, and so could its reads), and
 * wasmtime's is left empty.
 */
function wasiConfig(lib: WasmtimeLib, req: RunRequest, keep: unknown[], ownStdin: boolean): Pointer {
  const wasi = lib.wasi_config_new() as Pointer;
  const fail = (msg: string): never => {
    lib.wasi_config_delete(wasi);
    throw new EngineError(msg);
  };
  const argv = req.args.map(cstr);
  const argvArr = cstrArray(argv);
  keep.push(argv, argvArr);
  let ok = lib.wasi_config_set_argv(wasi, argv.length, argvArr);
  const names = req.env.map(([k]) => cstr(k));
  const values = req.env.map(([, v]) => cstr(v));
  const namesArr = cstrArray(names);
  const valuesArr = cstrArray(values);
  keep.push(names, values, namesArr, valuesArr);
  ok &&= lib.wasi_config_set_env(wasi, names.length, namesArr, valuesArr);
  if (!ok) fail("wasi: argv/env must be valid UTF-8 without NUL");
  if (req.rootDir !== undefined && !lib.wasi_config_preopen_dir(wasi, cstr(req.rootDir), cstr("/"), !req.rootReadOnly)) {
    fail(`wasi: cannot preopen ${req.rootDir} as /`);
  }
  // Further directories at their own paths (shared mode: the spec's bind-mounted volumes).
  for (const [host, guest, readOnly] of req.preopens ?? []) {
    if (!lib.wasi_config_preopen_dir(wasi, cstr(host), cstr(guest), !readOnly)) fail(`wasi: cannot preopen ${host} as ${guest}`);
  }
  const stdio: [string | null, "stdin" | "stdout" | "stderr"][] = [
    [req.stdin, "stdin"],
    [req.stdout, "stdout"],
    [req.stderr, "stderr"],
  ];
  for (const [path, which] of stdio) {
    if (which === "stdin" && ownStdin) continue;
    if (path === null) lib[`wasi_config_inherit_${which}`](wasi);
    else if (!lib[`wasi_config_set_${which}_file`](wasi, cstr(path))) fail(`wasi: cannot open ${which} ${path}`);
  }
  return wasi;
}
