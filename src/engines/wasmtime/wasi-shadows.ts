// The WASI functions the run thread shadows that need wasmtime's own (./worker.ts defines them
// all at link time through one callback): the passthrough to wasmtime's implementation, and the
// file guard's path_open, fd_close and fd_renumber (./file-guard.ts has the rules). A script of
// its own (an entry point of the binary, found like a Worker's, RunRequest.shadowsScript), loaded
// on a run's first call of one of them: whatever the run thread's script bundles, each run
// thread pays for in memory, loaded or not, and in shared mode each idle container is such a
// thread (this code in the worker's bundle: +0.10-0.15 MiB PSS per idle container, measured).

import { ptr as bunPtr, type Pointer, toArrayBuffer } from "bun:ffi";
import type { ValType } from "../host-functions.ts";
import { ERRNO_SUCCESS, FILETYPE_CHARACTER_DEVICE, WASI_MODULE } from "../wasi-abi.ts";
import { check, errorMessage, instanceExport, LAYOUT, readPtr, type WasmtimeLib } from "./ffi.ts";
import {
  fdCloseRule,
  fdRenumberRule,
  type GuardCall,
  type GuardRun,
  GuestFds,
  HandleCount,
  pathOpenRule,
  REAL_WASI,
  type RealCall,
  type RealName,
  runGuard,
} from "./file-guard.ts";
import { KILL } from "./run-atomics.ts";

/** A host function's body: (caller, args, results) → a trap, or null. */
export type HostCallback = (caller: Pointer, args: Pointer, results: Pointer) => Pointer | null;

/** What these shadows need of the run thread's code (./worker.ts). */
export interface GuestTools {
  engine: Pointer;
  /** The caller's exported "memory", as a view valid during the call. */
  callerMemory(lib: WasmtimeLib, caller: Pointer): Uint8Array;
  /** A module compiled from WAT text. */
  compileWat(text: Uint8Array): Pointer;
}

/** The file guard's shadows. */
export interface FileGuard {
  pathOpen: HostCallback;
  fdClose: HostCallback;
  fdRenumber: HostCallback;
}

export { REAL_WASI, type RealName };

/**
 * Calls wasmtime's imports of wasi_snapshot_preview1.`REAL_WASI` from wasm, on the guest's
 * memory: they find the memory through their caller, so a helper instance, made on first need in
 * the run's store, imports the guest's memory, exports it as "memory", and calls them.
 */
const HELPER_WAT = `(module
${Object.entries(REAL_WASI)
  .map(([name, params]) => `  (import "${WASI_MODULE}" "${name}" (func $${name} (param ${params.join(" ")}) (result i32)))`)
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
export type RealResult = { errno: number } | { trap: Pointer };

export class RealWasi {
  private fns: Map<RealName, Buffer> | null = null;
  private readonly trapOut = new BigUint64Array(1);
  private readonly results = Buffer.alloc(LAYOUT.val.size);

  constructor(
    private readonly lib: WasmtimeLib,
    private readonly tools: GuestTools,
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

  /** A wasmtime_val_t array of `name`'s arguments (i32s as numbers, i64s as bigints). */
  static vals(name: RealName, values: (number | bigint)[]): Buffer {
    const types: readonly ValType[] = REAL_WASI[name];
    const b = Buffer.alloc(values.length * LAYOUT.val.size);
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    values.forEach((x, i) => {
      const at = i * LAYOUT.val.size;
      if (types[i] === "i64") {
        v.setUint8(at + LAYOUT.val.kind, LAYOUT.valkind.i64);
        v.setBigInt64(at + LAYOUT.val.of, BigInt(x), true);
      } else {
        v.setUint8(at + LAYOUT.val.kind, LAYOUT.valkind.i32);
        v.setInt32(at + LAYOUT.val.of, Number(x), true);
      }
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
    const module = this.tools.compileWat(Buffer.from(HELPER_WAT));
    const l = lib.wasmtime_linker_new(this.tools.engine) as Pointer;
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
        const fn = instanceExport(lib, cx, instance, name);
        if (!fn) throw new Error(`the WASI helper has no ${name}`);
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
export function trapWith(lib: WasmtimeLib, message: string): Pointer {
  const msg = Buffer.from(message);
  return lib.wasmtime_trap_new(msg, msg.length) as Pointer;
}

/** Sets the i32 result of a shadow to `errno`. */
export function returnErrno(out: Pointer, errno: number): null {
  const v = new DataView(toArrayBuffer(out, 0, LAYOUT.val.size));
  v.setUint8(LAYOUT.val.kind, LAYOUT.valkind.i32);
  v.setInt32(LAYOUT.val.of, errno, true);
  return null;
}

/**
 * Shadow path_open, fd_close and fd_renumber with the rules of ./file-guard.ts (its
 * pathOpenRule, fdCloseRule, fdRenumberRule), each real call they ask for made at once.
 */
export function fileGuard(
  lib: WasmtimeLib,
  tools: GuestTools,
  real: RealWasi,
  handles: HandleCount,
  fds: GuestFds,
  kill: Int32Array,
): FileGuard {
  const shadow = (name: RealName, rule: (run: GuardRun<Pointer>, args: (number | bigint)[]) => GuardCall<Pointer>): HostCallback => {
    const types: readonly ValType[] = REAL_WASI[name];
    return (caller, args, out) => {
      try {
        const run: GuardRun<Pointer> = {
          handles,
          fds,
          memory: () => tools.callerMemory(lib, caller),
          killed: () => Atomics.load(kill, KILL) !== 0,
          drop: (trap) => lib.wasm_trap_delete(trap),
        };
        const view = new DataView(toArrayBuffer(args, 0, types.length * LAYOUT.val.size));
        const values = types.map((t, i) =>
          t === "i64"
            ? view.getBigInt64(i * LAYOUT.val.size + LAYOUT.val.of, true)
            : view.getInt32(i * LAYOUT.val.size + LAYOUT.val.of, true),
        );
        const r = runGuard(rule(run, values), (c: RealCall) => real.call(caller, c.name, RealWasi.vals(c.name, c.args)));
        return "trap" in r ? r.trap : returnErrno(out, r.errno);
      } catch (e) {
        return trapWith(lib, `${name}: ${e instanceof Error ? e.message : String(e)}`);
      }
    };
  };
  return {
    pathOpen: shadow("path_open", pathOpenRule),
    fdClose: shadow("fd_close", fdCloseRule),
    fdRenumber: shadow("fd_renumber", fdRenumberRule),
  };
}

/** The i-th i32 of a shadow's `n` arguments (a wasmtime_val_t array). */
function i32At(args: Pointer, n: number, i: number): number {
  return new DataView(toArrayBuffer(args, 0, n * LAYOUT.val.size)).getInt32(i * LAYOUT.val.size + LAYOUT.val.of, true);
}

/** fdstat (wasi_snapshot_preview1.witx): fs_filetype u8 at 0, fs_rights_base u64 at 8. */
const FDSTAT_RIGHTS_BASE = 8;
/** The rights isatty() (wasi-libc) takes to mean "not a terminal": fd_seek, fd_tell. */
const SEEK_OR_TELL = (1n << 2n) | (1n << 5n);

/**
 * fd_fdstat_get of a run whose stdio is a terminal its caller made (RunRequest.terminal): wasmtime
 * opened those fds by path as plain files, so it reports a seekable file and isatty() says no. For
 * fds 0–2, while they are still its stdio (`fds`: the file guard's close and renumber take them
 * out, or move them), it says what a terminal is: a character device without seek or tell.
 */
export function terminalFdstat(lib: WasmtimeLib, tools: GuestTools, real: RealWasi, fds: GuestFds): HostCallback {
  return (caller, args, out) => {
    try {
      const r = real.call(caller, "fd_fdstat_get", args);
      if ("trap" in r) return r.trap;
      const fd = i32At(args, 2, 0);
      if (r.errno === ERRNO_SUCCESS && fds.stdioRole(fd) !== undefined) {
        const buf = i32At(args, 2, 1) >>> 0;
        const mem = tools.callerMemory(lib, caller);
        const v = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
        v.setUint8(buf, FILETYPE_CHARACTER_DEVICE);
        v.setBigUint64(buf + FDSTAT_RIGHTS_BASE, v.getBigUint64(buf + FDSTAT_RIGHTS_BASE, true) & ~SEEK_OR_TELL, true);
      }
      return returnErrno(out, r.errno);
    } catch (e) {
      return trapWith(lib, `fd_fdstat_get: ${e instanceof Error ? e.message : String(e)}`);
    }
  };
}

/** The shadows of one run: wasmtime's own WASI, the file guard, and what to close at the run's end. */
export interface Shadows {
  real: RealWasi;
  guard: FileGuard;
  /** fd_fdstat_get of a run on a terminal (terminalFdstat). */
  terminalFdstat: HostCallback;
  dispose(): void;
}

/**
 * The shadows of a run whose WASI context has `preopens` (host directories, numbered from 3
 * after stdio) and a cap of `maxOpenFiles` handles (stdio and preopens included).
 */
export function shadowsFor(
  lib: WasmtimeLib,
  tools: GuestTools,
  keep: unknown[],
  preopens: string[],
  maxOpenFiles: number | undefined,
  kill: Int32Array,
): Shadows {
  const real = new RealWasi(lib, tools, keep);
  const handles = new HandleCount(3 + preopens.length, maxOpenFiles);
  const fds = new GuestFds(preopens);
  return {
    real,
    guard: fileGuard(lib, tools, real, handles, fds, kill),
    // The stdio fds that are still the terminal's: the guard's close and renumber keep them.
    terminalFdstat: terminalFdstat(lib, tools, real, fds),
    dispose: () => fds.dispose(),
  };
}
