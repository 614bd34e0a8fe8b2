// Runs one wasm module (or component: ./component.ts) to its end on the calling thread: a run
// thread of its own (./worker.ts), or the executor's main thread (WasmtimeEngine.executeHere).
// The run pools (./pool-worker.ts) share its module loading (./load-compiled.ts) and error reporting.
//
// Interruption (set up in ./store.ts): the store's epoch deadline is 1 tick ahead. The main thread sets
// kill[0] = signal and calls wasmtime_engine_increment_epoch (thread-safe). When the
// running code reaches the deadline, the epoch-deadline callback (a JSCallback that
// runs synchronously on this thread) sees kill[0] != 0 and returns an error, which
// unwinds the wasm. If kill[0] is still 0 (another store on the same engine was the
// target), it extends the deadline by one tick and the module carries on.

import { ptr as bunPtr, JSCallback, type Pointer, toArrayBuffer } from "bun:ffi";
import { EXIT_ENGINE_ERROR } from "../engine.ts";
import type { HostCaller, HostFunctions, ValType } from "../host-functions.ts";
import { WASI_MODULE } from "../wasi-abi.ts";
import {
  check,
  cstr,
  defineHost,
  errorMessage,
  instanceExport,
  LAYOUT,
  readPtr,
  takeByteVec,
  type WasmtimeLib,
  wasmtime,
  wat2wasm,
} from "./ffi.ts";
import { clockOnlyWait, type GuestClock, guestClocks, writeClockEvents } from "./interruptible.ts";
import { type CodeKind, loadCompiled } from "./load-compiled.ts";
import { outcomeOf } from "./outcome.ts";
import type { RunRequest, RunStats, WorkerMessage } from "./protocol.ts";
import { publishMemory } from "./run-atomics.ts";
import { EngineError, openStore, type RunStore } from "./store.ts";

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

/** A module compiled from its binary or WAT text. */
export function compile(lib: WasmtimeLib, engine: Pointer, bytes: Uint8Array, kind: "wasm" | "wat"): Pointer {
  const wasm = kind === "wat" ? wat2wasm(lib, bytes) : bytes;
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

/** A core module, as ./load-compiled.ts loads it. */
const CORE_MODULE: CodeKind = {
  compile,
  deserialize,
  deserializeFile,
  serialize: (lib, module) => takeByteVec(lib, "serialize", (vec) => lib.wasmtime_module_serialize(module, vec)),
};

/** The run's compiled module: its artifact deserialized (or its source compiled, then posted for the cache). */
export function loadModule(lib: WasmtimeLib, engine: Pointer, req: RunRequest, post: RunEnv["post"], stats: RunStats): Pointer {
  return loadCompiled(lib, engine, req, post, stats, CORE_MODULE);
}

function run(req: RunRequest, hosts: HostFunctions[], env: RunEnv): { code: number; message?: string; stats: RunStats } {
  const { lib } = wasmtime(req.libPath);
  const engine = req.enginePtr as Pointer;
  const { kill, post } = env;
  const stats: RunStats = { instantiateMs: 0, runMs: 0 };
  const keep: unknown[] = []; // buffers C may still point at during the call

  // 1. module
  const module = loadModule(lib, engine, req, post, stats);
  let t = performance.now();

  let store: Pointer | null = null;
  let linker: Pointer | null = null;
  let deadlineCb: JSCallback | null = null;
  let dispatch: Dispatch | undefined;
  let made: Shadows | undefined;
  let exitStatus: number | undefined;
  try {
    t = performance.now();
    // 2-3. store: WASI preview 1 context, memory limit, epoch interruption; one instance more
    // than the module's for the file guard's WASI helper (./wasi-shadows.ts).
    const opened = openStore(lib, engine, req, kill, keep, 1);
    const clock = guestClocks(process.hrtime.bigint()); // its WASI context was just made
    store = opened.store;
    deadlineCb = opened.deadlineCb ?? null;
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
    // Our functions (proc_exit, poll_oneoff, the file guard's, the host modules') share one callback.
    const d = new Dispatch();
    dispatch = d;
    defineProcExit(lib, linker, d, (status) => {
      exitStatus = status;
    });
    const shadows = (): Shadows => {
      if (made) return made;
      // By path, not bundled into this thread's script (./wasi-shadows.ts says why).
      const script = req.shadowsScript.startsWith("file:") ? Bun.fileURLToPath(req.shadowsScript) : req.shadowsScript;
      const w = require(script) as typeof import("./wasi-shadows.ts");
      const tools = { engine, callerMemory, compileWat: (text: Uint8Array) => compile(lib, engine, text, "wat") };
      const preopens = [...(req.rootDir !== undefined ? [req.rootDir] : []), ...(req.preopens ?? []).map(([host]) => host)];
      made = w.shadowsFor(lib, tools, keep, preopens, req.maxOpenFiles, kill);
      return made;
    };
    defineInterruptiblePoll(lib, linker, d, shadows, env, clock);
    defineFileGuard(lib, linker, d, shadows);
    // stdio on a terminal its caller made: isatty() must say so (./wasi-shadows.ts terminalFdstat).
    if (req.terminal)
      defineFunc(lib, linker, WASI_MODULE, "fd_fdstat_get", ["i32", "i32"], ["i32"], (c, a, o) => shadows().terminalFdstat(c, a, o), d);
    for (const host of hosts) defineHostFunctions(lib, linker, host, d);
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
    const ext = instanceExport(lib, ctx, instance, req.entry, LAYOUT.externKindFunc);
    if (!ext) throw new EngineError(`module has no exported function "${req.entry}"`);
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
    made?.dispose();
    lib.wasmtime_module_delete(module);
    deadlineCb?.close();
    dispatch?.cb.close();
    void keep;
  }
}

const PROC_EXIT_MARK = "bunwasi: proc_exit";

type HostCallback = (caller: Pointer, args: Pointer, results: Pointer) => Pointer | null;

/**
 * One JSCallback for several host functions: each JSCallback costs the run thread memory (a
 * trampoline, a function object), and in shared mode every idle container is such a thread.
 * wasmtime hands each function its own `env` pointer back: here, its index in `impls` plus one.
 */
class Dispatch {
  private readonly impls: HostCallback[] = [];
  readonly cb = new JSCallback(
    (env: Pointer, caller: Pointer, args: Pointer, _nargs: number | bigint, out: Pointer, _nresults: number | bigint) =>
      (this.impls[Number(env) - 1] as HostCallback)(caller, args, out),
    { args: ["ptr", "ptr", "ptr", "usize", "ptr", "usize"], returns: "ptr" },
  );

  /** `impl`'s env pointer. */
  add(impl: HostCallback): Pointer {
    return this.impls.push(impl) as Pointer;
  }
}

/** Define `module`.`name` in the linker as a function of the given types, run by `impl` through `dispatch`'s callback. */
function defineFunc(
  lib: WasmtimeLib,
  linker: Pointer,
  module: string,
  name: string,
  params: ValType[],
  results: ValType[],
  impl: HostCallback,
  dispatch: Dispatch,
): void {
  const host = { callback: dispatch.cb.ptr as Pointer, env: dispatch.add(impl), finalizer: null };
  defineHost(lib, linker, module, name, { params, results }, host);
}

/** Define wasi_snapshot_preview1.proc_exit(i32) → records the status and traps. */
function defineProcExit(lib: WasmtimeLib, linker: Pointer, d: Dispatch, onExit: (status: number) => void): void {
  const mark = Buffer.from(PROC_EXIT_MARK);
  defineFunc(
    lib,
    linker,
    WASI_MODULE,
    "proc_exit",
    ["i32"],
    [],
    (_caller, args) => {
      onExit(new DataView(toArrayBuffer(args, 0, LAYOUT.val.size)).getUint32(LAYOUT.val.of, true));
      return lib.wasmtime_trap_new(mark, mark.length) as Pointer;
    },
    d,
  );
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

/** The shadows that call wasmtime's own WASI (./wasi-shadows.ts), made on a run's first need of one. */
type Shadows = import("./wasi-shadows.ts").Shadows;

/**
 * Shadow wasi_snapshot_preview1.poll_oneoff with one whose sleeps a kill ends at once
 * (./interruptible.ts). Every other poll (fds, absolute deadlines) is wasmtime's own.
 */
function defineInterruptiblePoll(
  lib: WasmtimeLib,
  linker: Pointer,
  d: Dispatch,
  shadows: () => Shadows,
  env: RunEnv,
  clock: GuestClock,
): void {
  const { kill, sleep, onWait } = env;
  const params: ValType[] = ["i32", "i32", "i32", "i32"];
  defineFunc(
    lib,
    linker,
    WASI_MODULE,
    "poll_oneoff",
    params,
    ["i32"],
    (caller, args, out) => {
      try {
        const view = new DataView(toArrayBuffer(args, 0, params.length * LAYOUT.val.size));
        const [inPtr, outPtr, n, neventsPtr] = params.map((_, i) => view.getUint32(i * LAYOUT.val.size + LAYOUT.val.of, true)) as [
          number,
          number,
          number,
          number,
        ];
        const callerMem = callerMemory(lib, caller);
        const wait = clockOnlyWait(callerMem, inPtr, n, clock);
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
        const r = shadows().real.call(caller, "poll_oneoff", args);
        return "trap" in r ? r.trap : returnErrno(out, r.errno);
      } catch (e) {
        return trapWith(lib, `poll_oneoff: ${e instanceof Error ? e.message : String(e)}`);
      }
    },
    d,
  );
}

/**
 * Shadow path_open, fd_close and fd_renumber with the file guard (./file-guard.ts): only
 * regular files and directories open, at most the run's cap of handles at once. The guard's code
 * is loaded on the first call of one of them (./wasi-shadows.ts).
 */
function defineFileGuard(lib: WasmtimeLib, linker: Pointer, d: Dispatch, shadows: () => Shadows): void {
  defineFunc(
    lib,
    linker,
    WASI_MODULE,
    "path_open",
    ["i32", "i32", "i32", "i32", "i32", "i64", "i64", "i32", "i32"],
    ["i32"],
    (c, a, o) => shadows().guard.pathOpen(c, a, o),
    d,
  );
  defineFunc(lib, linker, WASI_MODULE, "fd_close", ["i32"], ["i32"], (c, a, o) => shadows().guard.fdClose(c, a, o), d);
  defineFunc(lib, linker, WASI_MODULE, "fd_renumber", ["i32", "i32"], ["i32"], (c, a, o) => shadows().guard.fdRenumber(c, a, o), d);
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
export function callerMemory(lib: WasmtimeLib, caller: Pointer): Uint8Array {
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
function defineHostFunctions(lib: WasmtimeLib, linker: Pointer, host: HostFunctions, d: Dispatch): void {
  for (const [module, fns] of Object.entries(host)) {
    for (const [name, f] of Object.entries(fns)) {
      defineFunc(
        lib,
        linker,
        module,
        name,
        f.params,
        f.results,
        (caller, args, out) => {
          try {
            const argView = f.params.length ? new DataView(toArrayBuffer(args, 0, f.params.length * LAYOUT.val.size)) : undefined;
            const values = f.params.map((t, i) => readVal(argView as DataView, i, t));
            const c: HostCaller = { memory: () => callerMemory(lib, caller) };
            const r = f.call(c, ...values);
            const rt = f.results[0];
            if (rt) writeVal(new DataView(toArrayBuffer(out, 0, LAYOUT.val.size)), 0, rt, r ?? 0);
            return null;
          } catch (e) {
            return trapWith(lib, `${module}.${name}: ${e instanceof Error ? e.message : String(e)}`);
          }
        },
        d,
      );
    }
  }
}

export function reportMessage(req: RunRequest, message: string) {
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

/** Publishes the instance's exported "memory" now and at every epoch callback (Stats, ./run-atomics.ts). */
function watchMemory(lib: WasmtimeLib, cx: Pointer, instance: Buffer, opened: RunStore, kill: Int32Array): void {
  const ext = instanceExport(lib, cx, instance, "memory", LAYOUT.externKindMemory);
  if (!ext) return;
  opened.memory.extern = ext;
  publishMemory(kill, Number(lib.wasmtime_memory_data_size(cx, (bunPtr(ext) + LAYOUT.extern.of) as Pointer)));
}

/** This thread's Linux id (gettid(2), in glibc since 2.30); 0 if unavailable. */
export function threadId(): number {
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
