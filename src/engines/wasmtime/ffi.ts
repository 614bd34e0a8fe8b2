// bun:ffi bindings for exactly the libwasmtime C API functions bunwasi uses.
//
// Signatures were checked against crates/c-api/include/{wasm.h,wasi.h,wasmtime/*.h}
// of wasmtime v48.0.0 (the version scripts/libwasmtime.sh pins). All wasm C API
// structs (wasm_byte_vec_t, wasmtime_instance_t, wasmtime_extern_t) are passed by
// pointer; we lay them out in Buffers (see the LAYOUT constants below).
//
// The library is loaded once per JS thread (each Bun Worker dlopens again; the
// dynamic loader hands back the same already-mapped library, so pointers such as
// a wasm_engine_t* are valid across threads of the process).

import { ptr as bunPtr, dlopen, FFIType, type Pointer, read, toArrayBuffer } from "bun:ffi";

const { ptr, bool, u8, i64, u64, function: fnptr } = FFIType;
const usize = "usize" as const; // size_t (64-bit)

/** Symbols bound from libwasmtime. */
export const SYMBOLS = {
  // wasm.h — config / engine / vectors / traps
  wasm_config_new: { args: [], returns: ptr },
  wasm_engine_new_with_config: { args: [ptr], returns: ptr },
  wasm_engine_delete: { args: [ptr], returns: FFIType.void },
  wasm_byte_vec_delete: { args: [ptr], returns: FFIType.void },
  wasm_trap_message: { args: [ptr, ptr], returns: FFIType.void },
  wasm_trap_delete: { args: [ptr], returns: FFIType.void },
  wasm_valtype_new: { args: [u8], returns: ptr },
  wasm_valtype_vec_new: { args: [ptr, usize, ptr], returns: FFIType.void },
  wasm_valtype_vec_new_empty: { args: [ptr], returns: FFIType.void },
  wasm_functype_new: { args: [ptr, ptr], returns: ptr },
  wasm_functype_delete: { args: [ptr], returns: FFIType.void },
  // wasmtime/config.h
  wasmtime_config_epoch_interruption_set: { args: [ptr, bool], returns: FFIType.void },
  wasmtime_config_cranelift_opt_level_set: { args: [ptr, u8], returns: FFIType.void },
  // wasmtime/engine.h
  wasmtime_engine_increment_epoch: { args: [ptr], returns: FFIType.void },
  // wasmtime/error.h, wasmtime/trap.h
  wasmtime_error_new: { args: [ptr], returns: ptr },
  wasmtime_error_delete: { args: [ptr], returns: FFIType.void },
  wasmtime_error_message: { args: [ptr, ptr], returns: FFIType.void },
  wasmtime_error_exit_status: { args: [ptr, ptr], returns: bool },
  wasmtime_trap_code: { args: [ptr, ptr], returns: bool },
  wasmtime_trap_new: { args: [ptr, usize], returns: ptr },
  // wasmtime/wat.h
  wasmtime_wat2wasm: { args: [ptr, usize, ptr], returns: ptr },
  // wasmtime/module.h
  wasmtime_module_new: { args: [ptr, ptr, usize, ptr], returns: ptr },
  wasmtime_module_delete: { args: [ptr], returns: FFIType.void },
  wasmtime_module_serialize: { args: [ptr, ptr], returns: ptr },
  wasmtime_module_deserialize: { args: [ptr, ptr, usize, ptr], returns: ptr },
  wasmtime_module_deserialize_file: { args: [ptr, ptr, ptr], returns: ptr },
  // wasmtime/store.h
  wasmtime_store_new: { args: [ptr, ptr, ptr], returns: ptr },
  wasmtime_store_context: { args: [ptr], returns: ptr },
  wasmtime_store_limiter: { args: [ptr, i64, i64, i64, i64, i64], returns: FFIType.void },
  wasmtime_store_delete: { args: [ptr], returns: FFIType.void },
  wasmtime_context_set_wasi: { args: [ptr, ptr], returns: ptr },
  wasmtime_context_set_epoch_deadline: { args: [ptr, u64], returns: FFIType.void },
  wasmtime_store_epoch_deadline_callback: { args: [ptr, fnptr, ptr, ptr], returns: FFIType.void },
  // wasi.h
  wasi_config_new: { args: [], returns: ptr },
  wasi_config_delete: { args: [ptr], returns: FFIType.void },
  wasi_config_set_argv: { args: [ptr, usize, ptr], returns: bool },
  wasi_config_set_env: { args: [ptr, usize, ptr, ptr], returns: bool },
  wasi_config_set_stdin_file: { args: [ptr, ptr], returns: bool },
  wasi_config_inherit_stdin: { args: [ptr], returns: FFIType.void },
  wasi_config_set_stdout_file: { args: [ptr, ptr], returns: bool },
  wasi_config_inherit_stdout: { args: [ptr], returns: FFIType.void },
  wasi_config_set_stderr_file: { args: [ptr, ptr], returns: bool },
  wasi_config_inherit_stderr: { args: [ptr], returns: FFIType.void },
  wasi_config_preopen_dir: { args: [ptr, ptr, ptr, bool], returns: bool },
  // wasmtime/linker.h, instance.h, func.h
  wasmtime_linker_new: { args: [ptr], returns: ptr },
  wasmtime_linker_delete: { args: [ptr], returns: FFIType.void },
  wasmtime_linker_allow_shadowing: { args: [ptr, bool], returns: FFIType.void },
  wasmtime_linker_define_wasi: { args: [ptr], returns: ptr },
  wasmtime_linker_define_func: { args: [ptr, ptr, usize, ptr, usize, ptr, fnptr, ptr, ptr], returns: ptr },
  wasmtime_linker_instantiate: { args: [ptr, ptr, ptr, ptr, ptr], returns: ptr },
  wasmtime_linker_define: { args: [ptr, ptr, ptr, usize, ptr, usize, ptr], returns: ptr },
  wasmtime_instance_export_get: { args: [ptr, ptr, ptr, usize, ptr], returns: bool },
  wasmtime_func_call: { args: [ptr, ptr, ptr, usize, ptr, usize, ptr], returns: ptr },
  wasmtime_caller_export_get: { args: [ptr, ptr, usize, ptr], returns: bool },
  wasmtime_caller_context: { args: [ptr], returns: ptr },
  // wasmtime/async.h (the run pools, ./pool-worker.ts): any store may be called through these
  wasmtime_func_call_async: { args: [ptr, ptr, ptr, usize, ptr, usize, ptr, ptr], returns: ptr },
  wasmtime_linker_instantiate_async: { args: [ptr, ptr, ptr, ptr, ptr, ptr], returns: ptr },
  wasmtime_linker_define_async_func: { args: [ptr, ptr, usize, ptr, usize, ptr, fnptr, ptr, ptr], returns: ptr },
  wasmtime_call_future_poll: { args: [ptr], returns: bool },
  wasmtime_call_future_delete: { args: [ptr], returns: FFIType.void },
  // wasmtime/memory.h
  wasmtime_memory_data: { args: [ptr, ptr], returns: ptr },
  wasmtime_memory_data_size: { args: [ptr, ptr], returns: usize },
  // wasmtime/component/component.h
  wasmtime_component_new: { args: [ptr, ptr, usize, ptr], returns: ptr },
  wasmtime_component_serialize: { args: [ptr, ptr], returns: ptr },
  wasmtime_component_deserialize: { args: [ptr, ptr, usize, ptr], returns: ptr },
  wasmtime_component_delete: { args: [ptr], returns: FFIType.void },
  wasmtime_component_export_index_delete: { args: [ptr], returns: FFIType.void },
  // wasmtime/component/linker.h
  wasmtime_component_linker_new: { args: [ptr], returns: ptr },
  wasmtime_component_linker_delete: { args: [ptr], returns: FFIType.void },
  wasmtime_component_linker_add_wasip2: { args: [ptr], returns: ptr },
  wasmtime_component_linker_instantiate: { args: [ptr, ptr, ptr, ptr], returns: ptr },
  // wasmtime/component/instance.h, func.h, types/func.h, types/val.h, val.h
  wasmtime_component_instance_get_export_index: { args: [ptr, ptr, ptr, ptr, usize], returns: ptr },
  wasmtime_component_instance_get_func: { args: [ptr, ptr, ptr, ptr], returns: bool },
  wasmtime_component_func_call: { args: [ptr, ptr, ptr, usize, ptr, usize], returns: ptr },
  wasmtime_component_func_type: { args: [ptr, ptr], returns: ptr },
  wasmtime_component_func_type_delete: { args: [ptr], returns: FFIType.void },
  wasmtime_component_func_type_param_count: { args: [ptr], returns: usize },
  wasmtime_component_func_type_result: { args: [ptr, ptr], returns: bool },
  wasmtime_component_valtype_delete: { args: [ptr], returns: FFIType.void },
  wasmtime_component_val_delete: { args: [ptr], returns: FFIType.void },
} as const;

/** Struct layouts (x86_64 / aarch64 LP64). */
export const LAYOUT = {
  /** wasm_byte_vec_t { size_t size; byte_t *data; } */
  byteVec: { size: 16, len: 0, data: 8 },
  /** wasmtime_instance_t { uint64_t store_id; size_t __private; } */
  instance: { size: 16 },
  /** wasmtime_extern_t { uint8_t kind; (pad 7) union { wasmtime_func_t func; ... } of; } — 32 bytes; func at 8 */
  extern: { size: 32, kind: 0, of: 8 },
  externKindFunc: 0,
  externKindMemory: 3,
  /** wasmtime_val_t { uint8_t kind; (pad 7) union wasmtime_valunion of; } — of.i32 at 8 */
  val: { size: 32, kind: 0, of: 8 },
  /** wasm_valkind_t WASM_I32 (and wasmtime_valkind_t WASMTIME_I32); I64, F32, F64 follow. */
  valkindI32: 0,
  valkind: { i32: 0, i64: 1, f32: 2, f64: 3 },
} as const;

/**
 * Component-model struct layouts, measured (sizeof/offsetof/_Alignof) by compiling a C
 * program with clang against the v48.0.0 headers (include/wasmtime/component/*.h), not
 * inferred from the field lists.
 */
export const COMPONENT_LAYOUT = {
  /** wasmtime_component_instance_t { uint64_t store_id; uint32_t __private; } — 16 bytes */
  instance: { size: 16 },
  /** wasmtime_component_func_t { struct { uint64_t store_id; uint32_t __private1; }; uint32_t __private2; } — 24 bytes */
  func: { size: 24 },
  /** wasmtime_component_valtype_t — 16 bytes (opaque here: only handed back to _delete) */
  valtype: { size: 16 },
  /** wasmtime_component_val_t { uint8_t kind; (pad 7) wasmtime_component_valunion_t of; } — 32 bytes, of at 8 */
  val: { size: 32, kind: 0, of: 8 },
  /** wasmtime_component_valresult_t { bool is_ok; (pad 7) wasmtime_component_val_t *val; } inside `of` */
  result: { isOk: 0, val: 8 },
  /** WASMTIME_COMPONENT_RESULT (wasmtime_component_valkind_t) */
  kindResult: 19,
} as const;

/** wasmtime_trap_code_t values we care about (wasmtime/trap.h). */
export const TRAP_CODE_INTERRUPT = 10;

export type WasmtimeLib = ReturnType<typeof openLib>["symbols"];

function openLib(path: string) {
  return dlopen(path, SYMBOLS);
}

let loaded: { path: string; lib: WasmtimeLib } | undefined;

/**
 * Load (once per JS thread) and return the bound symbols. The path is the caller's to find
 * (./library.ts): this file is loaded by every run thread, which should not load node:fs.
 */
export function wasmtime(path: string): { path: string; lib: WasmtimeLib } {
  if (loaded && path === loaded.path) return loaded;
  loaded = { path, lib: openLib(path).symbols };
  return loaded;
}

// ---- small helpers over raw memory ----

/** NUL-terminated UTF-8 copy of `s`. Keep the Buffer alive while C uses it. */
export function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`, "utf8");
}

/** An array of char* pointing into `strs` (which must be kept alive). */
export function cstrArray(strs: Buffer[]): BigUint64Array {
  const arr = new BigUint64Array(Math.max(1, strs.length));
  strs.forEach((b, i) => {
    arr[i] = BigInt(bunPtr(b));
  });
  return arr;
}

/** Read a pointer-sized out-parameter. */
export function readPtr(buf: BigUint64Array | Buffer, off = 0): Pointer | null {
  const p = read.ptr(bunPtr(buf), off);
  return p === 0 ? null : (p as Pointer);
}

/** Copy a wasm_byte_vec_t's bytes out (does not free it). */
export function byteVecBytes(vec: Buffer): Uint8Array {
  const len = Number(vec.readBigUInt64LE(LAYOUT.byteVec.len));
  const data = Number(vec.readBigUInt64LE(LAYOUT.byteVec.data));
  if (len === 0 || data === 0) return new Uint8Array(0);
  return new Uint8Array(toArrayBuffer(data as Pointer, 0, len)).slice();
}

/** What a call that fills a wasm_byte_vec_t gave (`fill`: its error, if any), copied out; the vector is freed. */
export function takeByteVec(lib: WasmtimeLib, what: string, fill: (vec: Buffer) => unknown): Uint8Array {
  const vec = Buffer.alloc(LAYOUT.byteVec.size);
  check(lib, fill(vec), what);
  const bytes = byteVecBytes(vec);
  lib.wasm_byte_vec_delete(vec);
  return bytes;
}

/** WAT text (a module's or a component's: libwasmtime's parser reads both) to its binary. */
export function wat2wasm(lib: WasmtimeLib, text: Uint8Array): Uint8Array {
  return takeByteVec(lib, "wat2wasm", (vec) => lib.wasmtime_wat2wasm(text, text.length, vec));
}

/** Message of a wasmtime_error_t (does not free it). */
export function errorMessage(lib: WasmtimeLib, err: Pointer): string {
  const vec = Buffer.alloc(LAYOUT.byteVec.size);
  lib.wasmtime_error_message(err, vec);
  const s = new TextDecoder().decode(byteVecBytes(vec));
  lib.wasm_byte_vec_delete(vec);
  return s.replace(/\0+$/, "");
}

/** Message of a wasm_trap_t (does not free it). */
export function trapMessage(lib: WasmtimeLib, trap: Pointer): string {
  const vec = Buffer.alloc(LAYOUT.byteVec.size);
  lib.wasm_trap_message(trap, vec);
  const s = new TextDecoder().decode(byteVecBytes(vec));
  lib.wasm_byte_vec_delete(vec);
  return s.replace(/\0+$/, "");
}

/** A wasm value type by name (LAYOUT.valkind). */
export type ValKind = keyof typeof LAYOUT.valkind;

/** A wasm_functype_t of `params` → `results` (the caller deletes it with wasm_functype_delete). */
function funcType(lib: WasmtimeLib, params: readonly ValKind[], results: readonly ValKind[]): Pointer {
  const vec = (types: readonly ValKind[]) => {
    const out = Buffer.alloc(LAYOUT.byteVec.size);
    if (!types.length) lib.wasm_valtype_vec_new_empty(out);
    else {
      const arr = new BigUint64Array(types.map((t) => BigInt(lib.wasm_valtype_new(LAYOUT.valkind[t]) as number)));
      lib.wasm_valtype_vec_new(out, types.length, arr); // takes the valtypes
    }
    return out;
  };
  return lib.wasm_functype_new(vec(params), vec(results)) as Pointer; // takes both vectors
}

/**
 * Defines `module`.`name` in `linker`: a host function of `params` → `results`, which wasmtime
 * calls as `callback` with `env` (freed by `finalizer`, if any, with the linker). `async`: for a
 * store driven through the async API (wasmtime_linker_define_async_func, ./pool-worker.ts).
 */
export function defineHost(
  lib: WasmtimeLib,
  linker: Pointer,
  module: string,
  name: string,
  types: { params: readonly ValKind[]; results: readonly ValKind[] },
  host: { callback: Pointer; env: Pointer | null; finalizer: Pointer | null; async?: boolean },
): void {
  const ty = funcType(lib, types.params, types.results);
  const mod = Buffer.from(module);
  const fn = Buffer.from(name);
  const define = host.async ? lib.wasmtime_linker_define_async_func : lib.wasmtime_linker_define_func;
  const err = define(linker, mod, mod.length, fn, fn.length, ty, host.callback, host.env, host.finalizer) as Pointer | null;
  lib.wasm_functype_delete(ty);
  check(lib, err, `define ${module}.${name}`);
}

/**
 * The export `name` of an instance in the store `cx` (a wasmtime_extern_t), if it has one of
 * `kind` (LAYOUT.externKind*; undefined: of any kind). C may point at it: keep it while it is used.
 */
export function instanceExport(lib: WasmtimeLib, cx: Pointer, instance: Buffer, name: string, kind?: number): Buffer | undefined {
  const ext = Buffer.alloc(LAYOUT.extern.size);
  const n = Buffer.from(name);
  if (!lib.wasmtime_instance_export_get(cx, instance, n, n.length, ext)) return undefined;
  if (kind !== undefined && ext[LAYOUT.extern.kind] !== kind) return undefined;
  return ext;
}

/** Throw a JS Error for a non-null wasmtime_error_t*, freeing it. */
export function check(lib: WasmtimeLib, result: unknown, what: string): void {
  const err = (result || null) as Pointer | null; // a wasmtime_error_t* (or null)
  if (!err) return;
  const msg = errorMessage(lib, err);
  lib.wasmtime_error_delete(err);
  throw new Error(`${what}: ${msg}`);
}
