// wasmtime as an Engine (../engine.ts): libwasmtime's C API through bun:ffi. This object is
// what a shim's entry file registers; importing it loads no library and starts no thread
// (only `load()` and `compiler.compile()` do), so `start` and `delete` stay cheap.

import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { CompileCache } from "../cache.ts";
import { type Engine, type ExecutorFile, isWasmBinary, isWat, isWatComponent, type Runner } from "../engine.ts";
import type { HostLoadOptions } from "../host-functions.ts";
import { killLibFile } from "../kill-signals.ts";
import { isHttpService } from "./http/exports.ts";
import { findHttpHost, HTTP_LIB_NAME, HTTP_VERSION_FILE, httpCacheKeyInSlices } from "./http/library.ts";
import { configFlags, findLibwasmtime, LIB_NAME, libwasmtimeVersion, OPT_LEVEL, VERSION_FILE } from "./library.ts";

const NAME = "wasmtime";

// The library does not change under a running process: look it up and read its version once,
// not on every Create's cache key (several stats and a file read each time).
let version: string | undefined;
function libraryVersion(): string {
  version ??= libwasmtimeVersion(findLibwasmtime());
  return version;
}

/** The wasi:http host library when `source` is a wasi:http service and the library is installed. */
function httpHostFor(source: Uint8Array): string | undefined {
  return isHttpService(source) ? findHttpHost() : undefined;
}

export const wasmtime: Engine = {
  name: NAME,

  // A wasi:http component is served (./http/serve.ts) until a signal drains it.
  isService: (module) => isHttpService(module),

  // A wasm binary (core module or component) or WAT text of either; "#export" entrypoints
  // are checked when the module or component is linked.
  canHandle: (ep) => isWasmBinary(ep.head) || isWat(ep.head) || isWatComponent(ep.head),

  // A wasi:http service is compiled by (and keyed to) the library that serves it
  // (./http/library.ts): an artifact of one wasmtime build is never fed to another.
  compiler: {
    cacheKey: (source) => {
      const http = httpHostFor(source);
      return http ? httpCacheKeyInSlices(source, http) : CompileCache.keyInSlices(source, NAME, libraryVersion(), configFlags(OPT_LEVEL));
    },
    compile: async (source) => (await import("./background-compile.ts")).compileInBackground(source, httpHostFor(source)),
  },

  // The library (and its version file, part of the cache key) beside the executor, the
  // C signal handlers that let the executor run the module on its main thread (runHere),
  // and the wasi:http host library when it is installed.
  executor: () => {
    const lib = findLibwasmtime();
    const files: ExecutorFile[] = [{ name: LIB_NAME, source: lib, sharedObject: true }];
    const version = join(dirname(lib), VERSION_FILE);
    if (existsSync(version)) files.push({ name: VERSION_FILE, source: version });
    const kill = killLibFile();
    if (kill) files.push(kill);
    const http = findHttpHost();
    if (http) {
      files.push({ name: HTTP_LIB_NAME, source: http, sharedObject: true });
      const v = join(dirname(http), HTTP_VERSION_FILE);
      if (existsSync(v)) files.push({ name: HTTP_VERSION_FILE, source: v });
    }
    return { files };
  },

  load: async (opts: HostLoadOptions = {}): Promise<Runner> => {
    const { prestartWorker, WasmtimeEngine } = await import("./engine.ts");
    // The run thread starts while the library loads (unless the caller runs on its own).
    if (!opts.thisThread) prestartWorker();
    const engine = new WasmtimeEngine({
      libPath: opts.dir ? join(opts.dir, LIB_NAME) : undefined,
      cacheDir: opts.cacheDir,
      killGraceMs: opts.killGraceMs,
      optLevel: OPT_LEVEL,
      hostModules: opts.hostModules,
      noFileCapabilities: opts.noFileCapabilities,
      pools: opts.pools,
      onRunThreads: opts.onRunThreads,
    });
    return { run: (ctx) => engine.execute(ctx), runHere: (ctx, kill) => engine.executeHere(ctx, kill), close: () => engine.close() };
  },
};
