// The per-run store both run paths share (core modules in ./worker.ts, components in
// ./component.ts): memory limit, the WASI context (one wasi_config_t serves preview 1
// and preview 2 in libwasmtime 48: the store keeps one context and both linkers read it),
// and the epoch-deadline callback that turns a kill into a trap.

import { ptr as bunPtr, JSCallback, type Pointer, toArrayBuffer } from "bun:ffi";
import { check, cstr, cstrArray, LAYOUT, type WasmtimeLib } from "./ffi.ts";
import type { RunRequest } from "./protocol.ts";
import { BLOCKED, publishMemory } from "./run-atomics.ts";

/** An error before the guest ran (bad module, link error, missing export): exit 125. */
export class EngineError extends Error {}

export interface RunStore {
  store: Pointer;
  ctx: Pointer;
  /** Must outlive the store (wasmtime calls it on the run thread); close after deleting the store. */
  deadlineCb: JSCallback;
  /**
   * The instance's exported memory (a wasmtime_extern_t), once the run has one: every epoch
   * callback then publishes its size for Stats (./run-atomics.ts).
   */
  memory: { extern?: Buffer };
}

/**
 * A store configured for `req`. `keep` collects buffers C may still read while the run
 * lasts. On error nothing leaks: the store is deleted before the throw.
 */
export function openStore(lib: WasmtimeLib, engine: Pointer, req: RunRequest, kill: Int32Array, keep: unknown[]): RunStore {
  const store = lib.wasmtime_store_new(engine, null, null) as Pointer;
  let deadlineCb: JSCallback | undefined;
  const memory: RunStore["memory"] = {};
  try {
    const ctx = lib.wasmtime_store_context(store) as Pointer;
    if (req.memoryLimitBytes !== undefined && req.memoryLimitBytes >= 0) {
      lib.wasmtime_store_limiter(store, BigInt(Math.floor(req.memoryLimitBytes)), -1n, -1n, -1n, -1n);
    }
    // takes ownership of the config
    check(lib, lib.wasmtime_context_set_wasi(ctx, wasiConfig(lib, req, keep)), "wasi");

    // Epoch interruption: deadline 1 tick ahead; each tick either kills (this run was
    // aborted) or extends by one tick (another store on the shared engine was the target).
    deadlineCb = new JSCallback(
      (cx: Pointer, _data: Pointer, delta: Pointer, kind: Pointer) => {
        // Any epoch bump (a Stats request among them) refreshes the memory figure.
        if (memory.extern)
          publishMemory(kill, Number(lib.wasmtime_memory_data_size(cx, (bunPtr(memory.extern) + LAYOUT.extern.of) as Pointer)));
        // Paused: this thread waits here, inside the module, until resumed or killed.
        Atomics.store(kill, BLOCKED, 1);
        while (Atomics.load(kill, 1) !== 0 && Atomics.load(kill, 0) === 0) Atomics.wait(kill, 1, 1);
        Atomics.store(kill, BLOCKED, 0);
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
    return { store, ctx, deadlineCb, memory };
  } catch (e) {
    lib.wasmtime_store_delete(store);
    deadlineCb?.close();
    throw e;
  }
}

/** A wasi_config_t with the run's argv, env, root preopen and stdio. */
function wasiConfig(lib: WasmtimeLib, req: RunRequest, keep: unknown[]): Pointer {
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
    if (path === null) lib[`wasi_config_inherit_${which}`](wasi);
    else if (!lib[`wasi_config_set_${which}_file`](wasi, cstr(path))) fail(`wasi: cannot open ${which} ${path}`);
  }
  return wasi;
}
