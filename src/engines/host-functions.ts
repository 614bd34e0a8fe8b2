// Host functions: functions a shim adds to what the guest can import, beside WASI.
//
// They are stated in a module of their own (its default export is a HostFunctions) because
// they must live where the engine links the guest: on the thread that runs it, inside the
// executor process. The engine imports that module there by its script path; a `bun build
// --compile` binary embeds it when it is one of the build's entry points (scripts/build-shim.sh
// lists them per binary).

import { embeddedScript } from "../common/compiled.ts";
import type { Engine, LoadOptions } from "./engine.ts";

/** A wasm value type a host function takes or returns. */
export type ValType = "i32" | "i64" | "f32" | "f64";

/** What a host function sees of its caller, valid only during the call. */
export interface HostCaller {
  /** The guest's exported linear memory "memory" (a view: copy what you keep). */
  memory(): Uint8Array;
}

export interface HostFunction {
  params: ValType[];
  results: ValType[];
  /** i32/f32/f64 arrive as numbers, i64 as bigint; return the results the same way (one value, or none). */
  call(caller: HostCaller, ...args: (number | bigint)[]): number | bigint | undefined;
}

/** import module name → function name → function, e.g. { "bunwasi:example/host": { log } }. */
export type HostFunctions = Record<string, Record<string, HostFunction>>;

/** Identity, for type checking a host module's default export. */
export function defineHostFunctions(fns: HostFunctions): HostFunctions {
  return fns;
}

/** LoadOptions an engine that supports host functions understands. */
export interface HostLoadOptions extends LoadOptions {
  /** Scripts (file paths or URLs) whose default export is a HostFunctions. */
  hostModules?: string[];
}

/**
 * `engine` plus the host functions of `modules` (URLs of modules whose default export is a
 * HostFunctions, e.g. `new URL("./host-functions.ts", import.meta.url)`). Everything else, the compile
 * cache included, is the wrapped engine's: host functions change linking, not compiled code.
 */
export function withHostFunctions(engine: Engine, opts: { name?: string; modules: (string | URL)[] }): Engine {
  return {
    name: opts.name ?? engine.name,
    canHandle: (ep, spec) => engine.canHandle(ep, spec),
    ...(engine.compiler ? { compiler: engine.compiler } : {}),
    executor: () => engine.executor(),
    load: (o: HostLoadOptions = {}) =>
      engine.load({ ...o, hostModules: [...(o.hostModules ?? []), ...opts.modules.map((m) => embeddedScript(String(m)))] } as LoadOptions),
  };
}
