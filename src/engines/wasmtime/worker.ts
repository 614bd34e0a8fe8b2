// Runs one wasm module (or component: ./component.ts) in this Worker thread, so the main
// JS thread stays free to notice signals and interrupt it (docs/ARCHITECTURE.md, "Pitfalls").
// The executor calls runRequest() on its main thread instead (WasmtimeEngine.executeHere):
// there a kill comes from C signal handlers (../kill-signals.ts) through the same kill word
// and epoch, and this module's onmessage is not installed.
//
// Interruption (set up in ./store.ts): the store's epoch deadline is 1 tick ahead. The main thread sets
// kill[0] = signal and calls wasmtime_engine_increment_epoch (thread-safe). When the
// running code reaches the deadline, the epoch-deadline callback (a JSCallback that
// runs synchronously on this thread) sees kill[0] != 0 and returns an error, which
// unwinds the wasm. If kill[0] is still 0 (another store on the same engine was the
// target), it extends the deadline by one tick and the module carries on.

import { ptr as bunPtr, JSCallback, type Pointer, toArrayBuffer } from "bun:ffi";
import { EXIT_ENGINE_ERROR, EXIT_TRAP } from "../engine.ts";
import type { HostCaller, HostFunctions, ValType } from "../host.ts";
import { check, cstr, errorMessage, LAYOUT, readPtr, TRAP_CODE_INTERRUPT, trapMessage, type WasmtimeLib, wasmtime } from "./ffi.ts";
import {
  ERRNO_ACCES,
  ERRNO_MFILE,
  ERRNO_SUCCESS,
  FILESTAT_FILETYPE,
  FILESTAT_SIZE,
  GuestDirs,
  HandleCount,
  LOOKUP_SYMLINK_FOLLOW,
  lookBeneath,
  mayOpen,
  mayOpenLook,
  scratchOffset,
} from "./file-guard.ts";
import { clockOnlyWait, interruptibleSleep, writeClockEvents } from "./interruptible.ts";
import type { RunRequest, RunStats, WorkerMessage } from "./protocol.ts";
import { KILL, publishMemory } from "./run-words.ts";
import { EngineError, openStore, type RunStore } from "./store.ts";

declare const self: Worker;

// node:fs is loaded only on the paths that need it (a fallback, an error message): importing
// it costs every run thread ~0.5 MiB of JS heap (measured), and in shared mode each idle
// container is one such thread.
const fs = () => require("node:fs") as typeof import("node:fs");

/** What a run needs from the thread it runs on: the kill word, a sleep a kill ends, and a way to post results. */
export interface RunEnv {
  /** [0] = the signal once killed, [1] = 1 while paused (./store.ts). */
  kill: Int32Array;
  /** Sleeps `ns` unless killed first; true if killed. */
  sleep: (ns: bigint) => boolean;
  post: (m: WorkerMessage) => void;
  /**
   * Called when the module is about to wait on a clock (each of its poll_oneoff sleeps; a
   * component: once, before its entry, since its waits are wasmtime's own). The executor
   * collects garbage there: the thread is inside wasm from then on, so no collection runs
   * on its own, and each sleep leaves a little garbage behind.
   */
  onWait?: () => void;
}

function compile(lib: WasmtimeLib, engine: Pointer, bytes: Uint8Array, kind: "wasm" | "wat"): Pointer {
  let wasm = bytes;
  if (kind === "wat") {
    const vec = Buffer.alloc(LAYOUT.byteVec.size);
    check(lib, lib.wasmtime_wat2wasm(bytes, bytes.length, vec), "wat2wasm");
    wasm = new Uint8Array(toArrayBuffer(Number(vec.readBigUInt64LE(8)) as Pointer, 0, Number(vec.readBigUInt64LE(0)))).slice();
    lib.wasm_byte_vec_delete(vec);
  }
  const out = new BigUint64Array(1);
  check(lib, lib.wasmtime_module_new(engine, wasm, wasm.length, out), "compile");
  return readPtr(out) as Pointer;
}

function deserialize(lib: WasmtimeLib, engine: Pointer, bytes: Uint8Array): Pointer {
  const out = new BigUint64Array(1);
  check(lib, lib.wasmtime_module_deserialize(engine, bytes, bytes.length, out), "deserialize");
  return readPtr(out) as Pointer;
}

/** A serialized module from a file, which wasmtime maps instead of copying. */
function deserializeFile(lib: WasmtimeLib, engine: Pointer, path: string): Pointer {
  const out = new BigUint64Array(1);
  try {
    check(lib, lib.wasmtime_module_deserialize_file(engine, cstr(path), out), "deserialize");
  } catch {
    // A cache on a noexec filesystem cannot be mapped as code: a private copy then (a bad
    // artifact fails here too, and the caller compiles the source).
    return deserialize(lib, engine, new Uint8Array(fs().readFileSync(path)));
  }
  return readPtr(out) as Pointer;
}

function serialize(lib: WasmtimeLib, module: Pointer): Uint8Array {
  const vec = Buffer.alloc(LAYOUT.byteVec.size);
  check(lib, lib.wasmtime_module_serialize(module, vec), "serialize");
  const out = new Uint8Array(toArrayBuffer(Number(vec.readBigUInt64LE(8)) as Pointer, 0, Number(vec.readBigUInt64LE(0)))).slice();
  lib.wasm_byte_vec_delete(vec);
  return out;
}

function run(req: RunRequest, hosts: HostFunctions[], env: RunEnv): { code: number; message?: string; stats: RunStats } {
  const { lib } = wasmtime(req.libPath);
  const engine = req.enginePtr as Pointer;
  const { kill, post } = env;
  const stats: RunStats = { instantiateMs: 0, runMs: 0 };
  const keep: unknown[] = []; // buffers C may still point at during the call

  // 1. module
  let module: Pointer;
  let t = performance.now();
  if (req.kind === "serialized") {
    try {
      module = req.serializedPath ? deserializeFile(lib, engine, req.serializedPath) : deserialize(lib, engine, req.module);
      stats.deserializeMs = performance.now() - t;
    } catch (e) {
      const fallback =
        req.fallback ??
        (req.fallbackPath && {
          // Within the module size cap, whatever the file has become (../module-file.ts; loaded on this path only).
          module: (require("../module-file.ts") as typeof import("../module-file.ts")).readModulePathSync(req.fallbackPath.path),
          kind: req.fallbackPath.kind,
        });
      if (!fallback) throw new EngineError(String((e as Error).message));
      t = performance.now();
      module = compile(lib, engine, fallback.module, fallback.kind);
      stats.compileMs = performance.now() - t;
      if (req.wantSerialized) post({ type: "serialized", bytes: serialize(lib, module) });
    }
  } else {
    try {
      module = compile(lib, engine, req.module, req.kind);
    } catch (e) {
      throw new EngineError((e as Error).message);
    }
    stats.compileMs = performance.now() - t;
    if (req.wantSerialized) post({ type: "serialized", bytes: serialize(lib, module) });
  }

  let store: Pointer | null = null;
  let linker: Pointer | null = null;
  let deadlineCb: JSCallback | null = null;
  const callbacks: JSCallback[] = [];
  let dirs: GuestDirs | undefined;
  let exitStatus: number | undefined;
  try {
    t = performance.now();
    // 2-3. store: WASI preview 1 context, memory limit, epoch interruption
    const opened = openStore(lib, engine, req, kill, keep);
    store = opened.store;
    deadlineCb = opened.deadlineCb;
    const ctx = opened.ctx;

    // Killed before the deadline was armed? (abort = store flag, then bump epoch; so a kill
    // after this check bumps the epoch past the deadline set above.)
    if (Atomics.load(kill, 0) !== 0) return { code: 128 + Atomics.load(kill, 0), stats };

    // 4. link + instantiate
    linker = lib.wasmtime_linker_new(engine) as Pointer;
    check(lib, lib.wasmtime_linker_define_wasi(linker), "define wasi");
    // wasmtime's WASI proc_exit rejects statuses >= 126 (an error without the status), so
    // shadow it with one that records any status and unwinds with a trap.
    lib.wasmtime_linker_allow_shadowing(linker, true);
    callbacks.push(
      defineProcExit(lib, linker, (status) => {
        exitStatus = status;
      }),
    );
    const real = new RealWasi(lib, engine, keep);
    callbacks.push(defineInterruptiblePoll(lib, linker, real, env));
    const handles = new HandleCount(3 + (req.rootDir !== undefined ? 1 : 0) + (req.preopens?.length ?? 0), req.maxOpenFiles);
    dirs = new GuestDirs([...(req.rootDir !== undefined ? [req.rootDir] : []), ...(req.preopens ?? []).map(([host]) => host)]);
    callbacks.push(...defineFileGuard(lib, linker, real, handles, dirs, kill));
    for (const host of hosts) callbacks.push(...defineHostFunctions(lib, linker, host));
    const instance = Buffer.alloc(LAYOUT.instance.size);
    const trapOut = new BigUint64Array(1);
    let err = lib.wasmtime_linker_instantiate(linker, ctx, module, instance, trapOut) as Pointer | null;
    stats.instantiateMs = performance.now() - t;
    if (err && !readPtr(trapOut) && exitStatus === undefined && Atomics.load(kill, 0) === 0) {
      // Not a trap of the start function: the module could not be linked (an import nobody
      // defines, a type mismatch). It never ran, like a missing export.
      const msg = errorMessage(lib, err);
      lib.wasmtime_error_delete(err);
      throw new EngineError(`link: ${msg}`);
    }
    let outcome = outcomeOf(lib, err, readPtr(trapOut), kill, exitStatus);
    if (outcome) return { ...outcome, stats };
    watchMemory(lib, ctx, instance, opened, kill);

    // 5. call the entry export
    const ext = Buffer.alloc(LAYOUT.extern.size);
    const name = Buffer.from(req.entry, "utf8");
    if (!lib.wasmtime_instance_export_get(ctx, instance, name, name.length, ext) || ext[LAYOUT.extern.kind] !== LAYOUT.externKindFunc) {
      throw new EngineError(`module has no exported function "${req.entry}"`);
    }
    if (req.collectBeforeRun) Bun.gc(true);
    t = performance.now();
    trapOut[0] = 0n;
    err = lib.wasmtime_func_call(ctx, (bunPtr(ext) + LAYOUT.extern.of) as Pointer, null, 0, null, 0, trapOut) as Pointer | null;
    stats.runMs = performance.now() - t;
    outcome = outcomeOf(lib, err, readPtr(trapOut), kill, exitStatus);
    return { ...(outcome ?? { code: 0 }), stats };
  } finally {
    if (linker) lib.wasmtime_linker_delete(linker);
    if (store) lib.wasmtime_store_delete(store); // closes the WASI files
    dirs?.dispose();
    lib.wasmtime_module_delete(module);
    deadlineCb?.close();
    for (const cb of callbacks) cb.close();
    void keep;
  }
}

const PROC_EXIT_MARK = "bunwasi: proc_exit";

type HostCallback = (caller: Pointer, args: Pointer, results: Pointer) => Pointer | null;

/** Define `module`.`name` in the linker as a function of the given types, run by `impl`. */
function defineFunc(
  lib: WasmtimeLib,
  linker: Pointer,
  module: string,
  name: string,
  params: ValType[],
  results: ValType[],
  impl: HostCallback,
): JSCallback {
  const vec = (types: ValType[]) => {
    const out = Buffer.alloc(LAYOUT.byteVec.size);
    if (!types.length) lib.wasm_valtype_vec_new_empty(out);
    else {
      const arr = new BigUint64Array(types.map((t) => BigInt(lib.wasm_valtype_new(LAYOUT.valkind[t]) as number)));
      lib.wasm_valtype_vec_new(out, types.length, arr); // takes the valtypes
    }
    return out;
  };
  const ty = lib.wasm_functype_new(vec(params), vec(results)) as Pointer; // takes both vectors
  const cb = new JSCallback(
    (_env: Pointer, caller: Pointer, args: Pointer, _nargs: number | bigint, out: Pointer, _nresults: number | bigint) =>
      impl(caller, args, out),
    { args: ["ptr", "ptr", "ptr", "usize", "ptr", "usize"], returns: "ptr" },
  );
  const mod = Buffer.from(module);
  const fn = Buffer.from(name);
  const err = lib.wasmtime_linker_define_func(linker, mod, mod.length, fn, fn.length, ty, cb.ptr as Pointer, null, null) as Pointer | null;
  lib.wasm_functype_delete(ty);
  check(lib, err, `define ${module}.${name}`);
  return cb;
}

/** Define wasi_snapshot_preview1.proc_exit(i32) → records the status and traps. */
function defineProcExit(lib: WasmtimeLib, linker: Pointer, onExit: (status: number) => void): JSCallback {
  const mark = Buffer.from(PROC_EXIT_MARK);
  return defineFunc(lib, linker, "wasi_snapshot_preview1", "proc_exit", ["i32"], [], (_caller, args) => {
    onExit(new DataView(toArrayBuffer(args, 0, LAYOUT.val.size)).getUint32(LAYOUT.val.of, true));
    return lib.wasmtime_trap_new(mark, mark.length) as Pointer;
  });
}

const WASI = "wasi_snapshot_preview1";

/** The signatures of wasmtime's own WASI functions our shadows reach (wasi_snapshot_preview1.witx). */
const REAL_WASI = {
  poll_oneoff: ["i32", "i32", "i32", "i32"],
  path_open: ["i32", "i32", "i32", "i32", "i32", "i64", "i64", "i32", "i32"],
  path_filestat_get: ["i32", "i32", "i32", "i32", "i32"],
  fd_filestat_get: ["i32", "i32"],
  fd_close: ["i32"],
  fd_renumber: ["i32", "i32"],
} as const satisfies Record<string, readonly ValType[]>;
type RealName = keyof typeof REAL_WASI;

/**
 * Calls wasmtime's imports of wasi_snapshot_preview1.`REAL_WASI` from wasm, on the guest's
 * memory: they find the memory through their caller, so a helper instance, made on first need in
 * the run's store, imports the guest's memory, exports it as "memory", and calls them.
 */
const HELPER_WAT = `(module
${Object.entries(REAL_WASI)
  .map(([name, params]) => `  (import "${WASI}" "${name}" (func $${name} (param ${params.join(" ")}) (result i32)))`)
  .join("\n")}
  (import "env" "memory" (memory 0))
  (export "memory" (memory 0))
${Object.entries(REAL_WASI)
  .map(
    ([name, params]) =>
      `  (func (export "${name}") (param ${params.join(" ")}) (result i32) ${params.map((_, i) => `(local.get ${i})`).join(" ")} (call $${name}))`,
  )
  .join("\n")})`;

/** What a call of wasmtime's own function gave: its errno, or a trap for the guest (an error: its message). */
type RealResult = { errno: number } | { trap: Pointer };

class RealWasi {
  private fns: Map<RealName, Buffer> | null = null;
  private readonly trapOut = new BigUint64Array(1);
  private readonly results = Buffer.alloc(LAYOUT.val.size);

  constructor(
    private readonly lib: WasmtimeLib,
    private readonly engine: Pointer,
    private readonly keep: unknown[],
  ) {}

  /** wasmtime's `name` with `args` (a wasmtime_val_t array: the shadow's own, or one made by vals()). */
  call(caller: Pointer, name: RealName, args: Pointer | Buffer): RealResult {
    const lib = this.lib;
    const fn = this.helper(caller).get(name) as Buffer;
    const cx = lib.wasmtime_caller_context(caller) as Pointer;
    this.trapOut[0] = 0n;
    const err = lib.wasmtime_func_call(
      cx,
      (bunPtr(fn) + LAYOUT.extern.of) as Pointer,
      args,
      REAL_WASI[name].length,
      this.results,
      1,
      this.trapOut,
    ) as Pointer | null;
    if (err) {
      const msg = Buffer.from(errorMessage(lib, err));
      lib.wasmtime_error_delete(err);
      return { trap: lib.wasmtime_trap_new(msg, msg.length) as Pointer };
    }
    const trap = readPtr(this.trapOut) as Pointer | null;
    if (trap) return { trap };
    return { errno: new DataView(this.results.buffer, this.results.byteOffset).getInt32(LAYOUT.val.of, true) };
  }

  /** A wasmtime_val_t array of i32s. */
  static vals(values: number[]): Buffer {
    const b = Buffer.alloc(values.length * LAYOUT.val.size);
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    values.forEach((x, i) => {
      writeVal(v, i, "i32", x);
    });
    return b;
  }

  private helper(caller: Pointer): Map<RealName, Buffer> {
    if (this.fns) return this.fns;
    const lib = this.lib;
    const cx = lib.wasmtime_caller_context(caller) as Pointer;
    const memory = Buffer.alloc(LAYOUT.extern.size);
    const memName = Buffer.from("memory");
    if (
      !lib.wasmtime_caller_export_get(caller, memName, memName.length, memory) ||
      memory[LAYOUT.extern.kind] !== LAYOUT.externKindMemory
    ) {
      throw new Error('the module exports no memory named "memory"');
    }
    const module = compile(lib, this.engine, Buffer.from(HELPER_WAT), "wat");
    const l = lib.wasmtime_linker_new(this.engine) as Pointer;
    try {
      check(lib, lib.wasmtime_linker_define_wasi(l), "define wasi");
      const env = Buffer.from("env");
      check(lib, lib.wasmtime_linker_define(l, cx, env, env.length, memName, memName.length, memory) as Pointer | null, "define memory");
      const instance = Buffer.alloc(LAYOUT.instance.size);
      this.trapOut[0] = 0n;
      const err = lib.wasmtime_linker_instantiate(l, cx, module, instance, this.trapOut) as Pointer | null;
      if (err || readPtr(this.trapOut)) throw new Error("cannot instantiate the WASI helper");
      const fns = new Map<RealName, Buffer>();
      for (const name of Object.keys(REAL_WASI) as RealName[]) {
        const fn = Buffer.alloc(LAYOUT.extern.size);
        const n = Buffer.from(name);
        if (!lib.wasmtime_instance_export_get(cx, instance, n, n.length, fn)) throw new Error(`the WASI helper has no ${name}`);
        fns.set(name, fn);
      }
      this.keep.push(instance, fns);
      this.fns = fns;
      return fns;
    } finally {
      lib.wasmtime_linker_delete(l);
      lib.wasmtime_module_delete(module);
    }
  }
}

/** A trap carrying `message`, for a shadow to return. */
function trapWith(lib: WasmtimeLib, message: string): Pointer {
  const msg = Buffer.from(message);
  return lib.wasmtime_trap_new(msg, msg.length) as Pointer;
}

/** Sets the i32 result of a shadow to `errno`. */
function returnErrno(out: Pointer, errno: number): null {
  writeVal(new DataView(toArrayBuffer(out, 0, LAYOUT.val.size)), 0, "i32", errno);
  return null;
}

/**
 * Shadow wasi_snapshot_preview1.poll_oneoff with one whose sleeps a kill ends at once
 * (./interruptible.ts). Every other poll (fds, absolute deadlines) is wasmtime's own.
 */
function defineInterruptiblePoll(lib: WasmtimeLib, linker: Pointer, real: RealWasi, env: RunEnv): JSCallback {
  const { kill, sleep, onWait } = env;
  const params = REAL_WASI.poll_oneoff;
  return defineFunc(lib, linker, WASI, "poll_oneoff", [...params], ["i32"], (caller, args, out) => {
    try {
      const view = new DataView(toArrayBuffer(args, 0, params.length * LAYOUT.val.size));
      const [inPtr, outPtr, n, neventsPtr] = params.map((_, i) => view.getUint32(i * LAYOUT.val.size + LAYOUT.val.of, true)) as [
        number,
        number,
        number,
        number,
      ];
      const callerMem = callerMemory(lib, caller);
      const wait = clockOnlyWait(callerMem, inPtr, n);
      if (wait) {
        // Asleep, the module cannot grow: the figure published now holds until it wakes.
        publishMemory(kill, callerMem.length);
        onWait?.();
        if (sleep(wait.timeoutNs)) return trapWith(lib, `interrupted by signal ${Atomics.load(kill, 0)}`);
        const mem = callerMemory(lib, caller);
        const count = writeClockEvents(mem, outPtr, wait.due);
        new DataView(mem.buffer, mem.byteOffset, mem.byteLength).setUint32(neventsPtr, count, true);
        return returnErrno(out, 0);
      }
      const r = real.call(caller, "poll_oneoff", args);
      return "trap" in r ? r.trap : returnErrno(out, r.errno);
    } catch (e) {
      return trapWith(lib, `poll_oneoff: ${e instanceof Error ? e.message : String(e)}`);
    }
  });
}

/**
 * Shadow path_open, fd_close and fd_renumber with the rules of ./file-guard.ts: only regular
 * files and directories are opened (EACCES otherwise, before the open where the path already
 * names something else), and at most `handles`' cap are open at once (EMFILE).
 */
function defineFileGuard(
  lib: WasmtimeLib,
  linker: Pointer,
  real: RealWasi,
  handles: HandleCount,
  dirs: GuestDirs,
  kill: Int32Array,
): JSCallback[] {
  const i32At = (args: Pointer, n: number, i: number) =>
    new DataView(toArrayBuffer(args, 0, n * LAYOUT.val.size)).getInt32(i * LAYOUT.val.size + LAYOUT.val.of, true);

  /**
   * The WASI filetype wasmtime reports for `call` (a stat into a borrowed 64-byte buffer at
   * `buf`), or its errno, or a trap; `avoid`: the guest memory the stat reads itself.
   */
  const statInto = (
    caller: Pointer,
    avoid: [number, number][],
    call: (buf: number) => RealResult,
  ): { filetype: number } | RealResult | undefined => {
    const mem = callerMemory(lib, caller);
    const at = scratchOffset(mem.length, FILESTAT_SIZE, avoid);
    if (at === undefined) return undefined;
    const saved = mem.slice(at, at + FILESTAT_SIZE);
    try {
      const r = call(at);
      if ("trap" in r || r.errno !== ERRNO_SUCCESS) return r;
      return { filetype: callerMemory(lib, caller)[at + FILESTAT_FILETYPE] as number };
    } finally {
      callerMemory(lib, caller).set(saved, at);
    }
  };

  const open = defineFunc(lib, linker, WASI, "path_open", [...REAL_WASI.path_open], ["i32"], (caller, args, out) => {
    try {
      const n = REAL_WASI.path_open.length;
      const [dirfd, lookup, pathPtr, pathLen] = [0, 1, 2, 3].map((i) => i32At(args, n, i)) as [number, number, number, number];
      const fdOut = i32At(args, n, 8) >>> 0;
      if (handles.full()) return returnErrno(out, ERRNO_MFILE);
      const followed = (lookup & LOOKUP_SYMLINK_FOLLOW) !== 0;
      const avoid: [number, number][] = [
        [pathPtr >>> 0, (pathPtr >>> 0) + (pathLen >>> 0)],
        [fdOut, fdOut + 4],
      ];
      // What the path names now (a fifo's open would wait): looked at on the host, or by
      // wasmtime's own resolution where that cannot tell.
      const base = dirs.dirFd(dirfd);
      const path = callerMemory(lib, caller).slice(pathPtr >>> 0, (pathPtr >>> 0) + (pathLen >>> 0));
      const look = base === undefined ? undefined : lookBeneath(base, path, followed);
      if (look && !mayOpenLook(look, followed)) return returnErrno(out, ERRNO_ACCES);
      if (!look) {
        const before = statInto(caller, avoid, (buf) =>
          real.call(caller, "path_filestat_get", RealWasi.vals([dirfd, lookup, pathPtr, pathLen, buf])),
        );
        if (before && "trap" in before) {
          // wasmtime's stat fails outright on a socket ("sockets are not currently supported"):
          // refused as such; the run's own kill is its trap.
          if (Atomics.load(kill, KILL) !== 0) return before.trap;
          lib.wasm_trap_delete(before.trap);
          return returnErrno(out, ERRNO_ACCES);
        }
        if (before && "filetype" in before && !mayOpen(before.filetype, followed)) return returnErrno(out, ERRNO_ACCES);
      }
      // Anything else (a missing path, a file to create, an error the open reports too): the open.
      const r = real.call(caller, "path_open", args);
      if ("trap" in r) return r.trap;
      if (r.errno !== ERRNO_SUCCESS) return returnErrno(out, r.errno);
      const mem = callerMemory(lib, caller);
      const fd = new DataView(mem.buffer, mem.byteOffset, mem.byteLength).getInt32(fdOut, true);
      // What was opened: the same file the look found (or a file it created), or else what
      // wasmtime says it is; a fifo renamed in between (its open found a peer) is closed unread.
      const again = base === undefined ? undefined : lookBeneath(base, path, followed);
      const same =
        look !== undefined &&
        again !== undefined &&
        again.kind !== "missing" &&
        mayOpenLook(again, followed) &&
        (look.kind === "missing" || ("id" in again && "id" in look && again.id === look.id));
      if (!same) {
        const after = statInto(caller, [[fdOut, fdOut + 4]], (buf) => real.call(caller, "fd_filestat_get", RealWasi.vals([fd, buf])));
        if (!after || "trap" in after || ("filetype" in after && !mayOpen(after.filetype, followed))) {
          if (after && "trap" in after) lib.wasm_trap_delete(after.trap);
          const closed = real.call(caller, "fd_close", RealWasi.vals([fd]));
          if ("trap" in closed) return closed.trap;
          return returnErrno(out, ERRNO_ACCES);
        }
      }
      dirs.opened(fd, same && again?.kind === "dir" ? again.host : undefined);
      handles.opened();
      return returnErrno(out, ERRNO_SUCCESS);
    } catch (e) {
      return trapWith(lib, `path_open: ${e instanceof Error ? e.message : String(e)}`);
    }
  });
  const close = defineFunc(lib, linker, WASI, "fd_close", [...REAL_WASI.fd_close], ["i32"], (caller, args, out) => {
    try {
      const r = real.call(caller, "fd_close", args);
      if ("trap" in r) return r.trap;
      if (r.errno === ERRNO_SUCCESS) {
        handles.closed();
        dirs.closed(i32At(args, 1, 0));
      }
      return returnErrno(out, r.errno);
    } catch (e) {
      return trapWith(lib, `fd_close: ${e instanceof Error ? e.message : String(e)}`);
    }
  });
  const renumber = defineFunc(lib, linker, WASI, "fd_renumber", [...REAL_WASI.fd_renumber], ["i32"], (caller, args, out) => {
    try {
      const [from, to] = [i32At(args, 2, 0), i32At(args, 2, 1)];
      const r = real.call(caller, "fd_renumber", args);
      if ("trap" in r) return r.trap;
      // `to` was closed, `from` took its number.
      if (r.errno === ERRNO_SUCCESS && from !== to) {
        handles.closed();
        dirs.renumbered(from, to);
      }
      return returnErrno(out, r.errno);
    } catch (e) {
      return trapWith(lib, `fd_renumber: ${e instanceof Error ? e.message : String(e)}`);
    }
  });
  return [open, close, renumber];
}

/** Read the i-th wasmtime_val_t of an array. */
function readVal(view: DataView, i: number, t: ValType): number | bigint {
  const at = i * LAYOUT.val.size + LAYOUT.val.of;
  if (t === "i32") return view.getInt32(at, true);
  if (t === "i64") return view.getBigInt64(at, true);
  if (t === "f32") return view.getFloat32(at, true);
  return view.getFloat64(at, true);
}

function writeVal(view: DataView, i: number, t: ValType, v: number | bigint): void {
  const base = i * LAYOUT.val.size;
  view.setUint8(base + LAYOUT.val.kind, LAYOUT.valkind[t]);
  const at = base + LAYOUT.val.of;
  if (t === "i32") view.setInt32(at, Number(v), true);
  else if (t === "i64") view.setBigInt64(at, BigInt(v), true);
  else if (t === "f32") view.setFloat32(at, Number(v), true);
  else view.setFloat64(at, Number(v), true);
}

/** The caller's exported "memory", as a view valid during the call. */
function callerMemory(lib: WasmtimeLib, caller: Pointer): Uint8Array {
  const ext = Buffer.alloc(LAYOUT.extern.size);
  const name = Buffer.from("memory");
  if (!lib.wasmtime_caller_export_get(caller, name, name.length, ext) || ext[LAYOUT.extern.kind] !== LAYOUT.externKindMemory) {
    throw new Error('the module exports no memory named "memory"');
  }
  const cx = lib.wasmtime_caller_context(caller) as Pointer;
  const mem = (bunPtr(ext) + LAYOUT.extern.of) as Pointer;
  const size = Number(lib.wasmtime_memory_data_size(cx, mem));
  const data = lib.wasmtime_memory_data(cx, mem) as Pointer;
  return size ? new Uint8Array(toArrayBuffer(data, 0, size)) : new Uint8Array(0);
}

/** Define every function of a host module; a function that throws traps the guest with its message. */
function defineHostFunctions(lib: WasmtimeLib, linker: Pointer, host: HostFunctions): JSCallback[] {
  const cbs: JSCallback[] = [];
  for (const [module, fns] of Object.entries(host)) {
    for (const [name, f] of Object.entries(fns)) {
      cbs.push(
        defineFunc(lib, linker, module, name, f.params, f.results, (caller, args, out) => {
          try {
            const argView = f.params.length ? new DataView(toArrayBuffer(args, 0, f.params.length * LAYOUT.val.size)) : undefined;
            const values = f.params.map((t, i) => readVal(argView as DataView, i, t));
            const c: HostCaller = { memory: () => callerMemory(lib, caller) };
            const r = f.call(c, ...values);
            const rt = f.results[0];
            if (rt) writeVal(new DataView(toArrayBuffer(out, 0, LAYOUT.val.size)), 0, rt, r ?? 0);
            return null;
          } catch (e) {
            const msg = Buffer.from(`${module}.${name}: ${e instanceof Error ? e.message : String(e)}`);
            return lib.wasmtime_trap_new(msg, msg.length) as Pointer;
          }
        }),
      );
    }
  }
  return cbs;
}

/** Exit code (and message) for an error/trap result, or null if the call succeeded. */
function outcomeOf(
  lib: WasmtimeLib,
  err: Pointer | null,
  trap: Pointer | null,
  kill: Int32Array,
  exitStatus: number | undefined,
): { code: number; message?: string } | null {
  const sig = Atomics.load(kill, 0);
  if ((err || trap) && exitStatus !== undefined) {
    if (err) lib.wasmtime_error_delete(err);
    if (trap) lib.wasm_trap_delete(trap);
    // like a process: the parent sees the low 8 bits
    return { code: exitStatus & 0xff };
  }
  if (err) {
    const status = new Int32Array(1);
    if (lib.wasmtime_error_exit_status(err, status)) {
      lib.wasmtime_error_delete(err);
      return { code: (status[0] ?? 0) & 0xff };
    }
    const msg = errorMessage(lib, err);
    lib.wasmtime_error_delete(err);
    if (sig) return { code: 128 + sig };
    return { code: EXIT_TRAP, message: msg };
  }
  if (trap) {
    const codeBuf = new Uint8Array(1);
    const hasCode = lib.wasmtime_trap_code(trap, codeBuf);
    const msg = trapMessage(lib, trap);
    lib.wasm_trap_delete(trap);
    if (sig || (hasCode && codeBuf[0] === TRAP_CODE_INTERRUPT)) return { code: 128 + (sig || 9) };
    return { code: EXIT_TRAP, message: msg };
  }
  return null;
}

function reportMessage(req: RunRequest, message: string) {
  const line = `${message.endsWith("\n") ? message : `${message}\n`}`;
  try {
    if (req.stderr !== null) fs().appendFileSync(req.stderr, line);
    else fs().writeSync(req.stderrFd ?? 2, line);
  } catch {
    // stderr gone: nothing better to do
  }
}

/** The host modules' default exports, imported on this thread (where the linker is). */
async function importHosts(urls: string[]): Promise<HostFunctions[]> {
  const out: HostFunctions[] = [];
  for (const url of urls) {
    let m: { default?: HostFunctions };
    try {
      m = await import(url);
    } catch (e) {
      throw new EngineError(`host module ${url}: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (!m.default || typeof m.default !== "object") throw new EngineError(`host module ${url} has no default export of host functions`);
    out.push(m.default);
  }
  return out;
}

/** Publishes the instance's exported "memory" now and at every epoch callback (Stats, ./run-words.ts). */
function watchMemory(lib: WasmtimeLib, cx: Pointer, instance: Buffer, opened: RunStore, kill: Int32Array): void {
  const ext = Buffer.alloc(LAYOUT.extern.size);
  const name = Buffer.from("memory");
  if (!lib.wasmtime_instance_export_get(cx, instance, name, name.length, ext) || ext[LAYOUT.extern.kind] !== LAYOUT.externKindMemory)
    return;
  opened.memory.extern = ext;
  publishMemory(kill, Number(lib.wasmtime_memory_data_size(cx, (bunPtr(ext) + LAYOUT.extern.of) as Pointer)));
}

/** This thread's Linux id (gettid(2), in glibc since 2.30); 0 if unavailable. */
function threadId(): number {
  try {
    // Required here, not imported: only a run thread of the daemon asks, and the executor,
    // which runs this module on its main thread, does not load the binding at all.
    return (require("../../linux/libc.ts") as typeof import("../../linux/libc.ts")).gettid();
  } catch {
    return 0;
  }
}

/** Runs `req` on this thread to its end; reports an error message on the run's stderr. */
export async function runRequest(req: RunRequest, env: RunEnv): Promise<{ code: number; message?: string; stats: RunStats }> {
  let result: { code: number; message?: string; stats: RunStats };
  try {
    // Host functions are core-module imports: a component links WASI preview 2 only.
    // Components' code is loaded only for a component: every run thread's heap pays for what it imports.
    result = req.component
      ? (require("./component.ts") as typeof import("./component.ts")).runComponent(req, env.post, env.kill, env.onWait)
      : run(req, await importHosts(req.hostModules), env);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    result = { code: EXIT_ENGINE_ERROR, message, stats: { instantiateMs: 0, runMs: 0 } };
    if (!(e instanceof EngineError) && !/^(compile|deserialize|wat2wasm|wasi|define )/.test(message)) {
      result.message = `bunwasi: internal error: ${message}`;
    }
  }
  if (result.message) reportMessage(req, result.message);
  return result;
}

if (!Bun.isMainThread) {
  const post = (m: WorkerMessage) => self.postMessage(m);
  self.onmessage = async (ev: MessageEvent<RunRequest>) => {
    const req = ev.data;
    if (req.wantThreadId) {
      const tid = threadId();
      if (tid > 0) post({ type: "thread", tid });
    }
    const kill = new Int32Array(req.kill);
    const result = await runRequest(req, { kill, sleep: (ns) => interruptibleSleep(kill, ns), post });
    post({ type: "exit", code: result.code, ...(result.message ? { message: result.message } : {}), stats: result.stats });
  };
}
