// Components (the component model) on the run worker: WASI preview 2 from libwasmtime's
// C API (wasmtime/component/*.h), with the same contract as core modules (README "Exit
// codes"): the run's store, WASI context and kill path come from ./store.ts.
//
// Entry: "_start" (the default) means the command world's `wasi:cli/run` export, whose
// `run: func() -> result` gives 0 for ok and 1 for err; any other name (from
// "component.wasm#name") is a root-level function export called with no arguments.
// Exit codes: `wasi:cli/exit.exit-with-code(n)` → n; `exit(err)` → 1 (which is also what
// the preview 1 adapter makes of any `proc_exit(n)` with n ≠ 0); a trap → 134; a kill → 128+s.

import type { Pointer } from "bun:ffi";
import { EXIT_TRAP } from "../engine.ts";
import { COMPONENT_LAYOUT, check, readPtr, takeByteVec, type WasmtimeLib, wasmtime, wat2wasm } from "./ffi.ts";
import { type CodeKind, loadCompiled } from "./load-compiled.ts";
import { errorOutcome } from "./outcome.ts";
import type { RunRequest, RunStats, WorkerMessage } from "./protocol.ts";
import { EngineError, openStore } from "./store.ts";

/** The command world's run interface. wasmtime matches export names semver-compatibly, so 0.2.0 finds any 0.2.x. */
export const CLI_RUN = "wasi:cli/run@0.2.0";

/** Compile a component from its binary or WAT text. */
export function compileComponent(lib: WasmtimeLib, engine: Pointer, bytes: Uint8Array, kind: "wasm" | "wat"): Pointer {
  const wasm = kind === "wat" ? wat2wasm(lib, bytes) : bytes;
  const out = new BigUint64Array(1);
  check(lib, lib.wasmtime_component_new(engine, wasm, wasm.length, out), "compile");
  return readPtr(out) as Pointer;
}

/** wasmtime's serialized form of a compiled component (for the compile cache). */
export function serializeComponent(lib: WasmtimeLib, component: Pointer): Uint8Array {
  return takeByteVec(lib, "serialize", (vec) => lib.wasmtime_component_serialize(component, vec));
}

function deserializeComponent(lib: WasmtimeLib, engine: Pointer, bytes: Uint8Array): Pointer {
  const out = new BigUint64Array(1);
  check(lib, lib.wasmtime_component_deserialize(engine, bytes, bytes.length, out), "deserialize");
  return readPtr(out) as Pointer;
}

/** A component, as ./load-compiled.ts loads it (its artifact is always sent in memory). */
const COMPONENT: CodeKind = { compile: compileComponent, deserialize: deserializeComponent, serialize: serializeComponent };

/** Run the component of `req` to completion on this thread. */
export function runComponent(
  req: RunRequest,
  post: (m: WorkerMessage) => void,
  kill: Int32Array = new Int32Array(req.kill),
  beforeEntry?: () => void,
): { code: number; message?: string; stats: RunStats } {
  const { lib } = wasmtime(req.libPath);
  const engine = req.enginePtr as Pointer;
  const stats: RunStats = { instantiateMs: 0, runMs: 0 };
  const keep: unknown[] = [];
  const component = loadCompiled(lib, engine, req, post, stats, COMPONENT);
  let linker: Pointer | null = null;
  let opened: ReturnType<typeof openStore> | undefined;
  try {
    let t = performance.now();
    opened = openStore(lib, engine, req, kill, keep);
    const { ctx } = opened;
    if (Atomics.load(kill, 0) !== 0) return { code: 128 + Atomics.load(kill, 0), stats };

    linker = lib.wasmtime_component_linker_new(engine) as Pointer;
    // All of WASI 0.2, wasi:sockets included, but no network: the store's WASI context
    // (./store.ts) never calls wasi_config_inherit_network, so wasmtime-wasi's default address
    // check refuses every bind and connect, and name lookups are off (its default). A component
    // in the shared-mode daemon, whose threads are in the node's namespace, reaches nothing.
    check(lib, lib.wasmtime_component_linker_add_wasip2(linker), "define wasi");
    const instance = Buffer.alloc(COMPONENT_LAYOUT.instance.size);
    const err = lib.wasmtime_component_linker_instantiate(linker, ctx, component, instance) as Pointer | null;
    stats.instantiateMs = performance.now() - t;
    if (err) {
      // An exit or kill during instantiation is an outcome; anything else means the
      // component could not be linked (an import nobody defines, a type mismatch).
      const outcome = errorOutcome(lib, err, Atomics.load(kill, 0));
      if (outcome.code !== EXIT_TRAP) return { ...outcome, stats };
      throw new EngineError(`link: ${outcome.message}`);
    }

    const func = Buffer.alloc(COMPONENT_LAYOUT.func.size);
    const isRun = req.entry === "_start";
    if (!exportedFunc(lib, ctx, instance, isRun ? [CLI_RUN, "run"] : [req.entry], func)) {
      throw new EngineError(
        isRun ? `component has no "${CLI_RUN}" export (not a command)` : `component has no exported function "${req.entry}"`,
      );
    }
    const hasResult = checkNoParams(lib, ctx, func, req.entry);

    const results = Buffer.alloc(COMPONENT_LAYOUT.val.size);
    // No poll of ours to see a component's first wait: now, then.
    beforeEntry?.();
    t = performance.now();
    const callErr = lib.wasmtime_component_func_call(func, ctx, null, 0, hasResult ? results : null, hasResult ? 1 : 0) as Pointer | null;
    stats.runMs = performance.now() - t;
    if (callErr) return { ...errorOutcome(lib, callErr, Atomics.load(kill, 0)), stats };
    let code = 0;
    if (hasResult) {
      // `run` returns `result`: ok → 0, err → 1 (what wasmtime's CLI reports too).
      if (isRun && results[COMPONENT_LAYOUT.val.kind] === COMPONENT_LAYOUT.kindResult) {
        code = results[COMPONENT_LAYOUT.val.of + COMPONENT_LAYOUT.result.isOk] ? 0 : 1;
      }
      lib.wasmtime_component_val_delete(results);
    }
    return { code, stats };
  } finally {
    if (linker) lib.wasmtime_component_linker_delete(linker);
    if (opened) {
      lib.wasmtime_store_delete(opened.store); // closes the WASI files
      opened.deadlineCb?.close();
    }
    lib.wasmtime_component_delete(component);
    void keep;
  }
}

/**
 * Find the function at `path` (instance names, then the function's name) among the
 * instance's exports and write it to `out`.
 */
function exportedFunc(lib: WasmtimeLib, ctx: Pointer, instance: Buffer, path: string[], out: Buffer): boolean {
  const owned: Pointer[] = [];
  try {
    let parent: Pointer | null = null;
    for (const name of path) {
      const n = Buffer.from(name, "utf8");
      const idx = lib.wasmtime_component_instance_get_export_index(instance, ctx, parent, n, n.length) as Pointer | null;
      if (!idx) return false;
      owned.push(idx);
      parent = idx;
    }
    return lib.wasmtime_component_instance_get_func(instance, ctx, parent, out);
  } finally {
    for (const idx of owned) lib.wasmtime_component_export_index_delete(idx);
  }
}

/** Refuse a function that takes arguments (we have none to give); say whether it returns a value. */
function checkNoParams(lib: WasmtimeLib, ctx: Pointer, func: Buffer, name: string): boolean {
  const ty = lib.wasmtime_component_func_type(func, ctx) as Pointer;
  try {
    const params = Number(lib.wasmtime_component_func_type_param_count(ty));
    if (params !== 0)
      throw new EngineError(`export "${name}" takes ${params} parameter(s); only functions without parameters can be called`);
    const valtype = Buffer.alloc(COMPONENT_LAYOUT.valtype.size);
    const hasResult = lib.wasmtime_component_func_type_result(ty, valtype);
    if (hasResult) lib.wasmtime_component_valtype_delete(valtype);
    return hasResult;
  } finally {
    lib.wasmtime_component_func_type_delete(ty);
  }
}
