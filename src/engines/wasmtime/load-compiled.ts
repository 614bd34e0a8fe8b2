// A run's compiled code, a core module's (./run-module.ts) or a component's (./component.ts)
// alike: its artifact deserialized, or, where there is none or it will not deserialize (made
// by another wasmtime), its source compiled, then posted back for the compile cache.

import type { Pointer } from "bun:ffi";
import { MODULE_MAX_BYTES } from "../../common/constants.ts";
import type { WasmtimeLib } from "./ffi.ts";
import type { RunRequest, RunStats, WorkerMessage } from "./protocol.ts";
import { EngineError } from "./store.ts";

/** How one kind of compiled code (a core module, a component) is made, read and written. */
export interface CodeKind {
  compile(lib: WasmtimeLib, engine: Pointer, bytes: Uint8Array, kind: "wasm" | "wat"): Pointer;
  deserialize(lib: WasmtimeLib, engine: Pointer, bytes: Uint8Array): Pointer;
  /** An artifact's file mapped (RunRequest.serializedPath); absent: it is never sent one. */
  deserializeFile?(lib: WasmtimeLib, engine: Pointer, path: string): Pointer;
  serialize(lib: WasmtimeLib, code: Pointer): Uint8Array;
}

/** The run's compiled code: its artifact deserialized (or its source compiled, then posted for the cache). */
export function loadCompiled(
  lib: WasmtimeLib,
  engine: Pointer,
  req: RunRequest,
  post: (m: WorkerMessage) => void,
  stats: RunStats,
  code: CodeKind,
): Pointer {
  let t = performance.now();
  let source: RunRequest["fallback"];
  if (req.kind === "serialized") {
    try {
      const compiled =
        req.serializedPath && code.deserializeFile
          ? code.deserializeFile(lib, engine, req.serializedPath)
          : code.deserialize(lib, engine, req.module);
      stats.deserializeMs = performance.now() - t;
      return compiled;
    } catch (e) {
      source = req.fallback ?? (req.fallbackPath && { module: readFallback(req.fallbackPath.path), kind: req.fallbackPath.kind });
      if (!source) throw new EngineError(String((e as Error).message));
      t = performance.now();
    }
  } else source = { module: req.module, kind: req.kind };
  let compiled: Pointer;
  try {
    compiled = code.compile(lib, engine, source.module, source.kind);
  } catch (e) {
    throw new EngineError((e as Error).message);
  }
  stats.compileMs = performance.now() - t;
  if (req.wantSerialized) post({ type: "serialized", bytes: code.serialize(lib, compiled) });
  return compiled;
}

/**
 * The source for a compile after a failed deserialize: the caller's checked fd (through
 * /proc/self/fd) or path, read only if a regular file, within MODULE_MAX_BYTES whatever it has
 * become (../module-file.ts is the main thread's; it is not bundled into a run thread's script).
 * node:fs is loaded here only: importing it costs every run thread ~0.5 MiB of JS heap.
 */
function readFallback(path: string): Uint8Array {
  const f = require("node:fs") as typeof import("node:fs");
  const fd = f.openSync(path, f.constants.O_RDONLY | f.constants.O_NONBLOCK | f.constants.O_NOCTTY);
  try {
    const st = f.fstatSync(fd);
    if (!st.isFile() || st.size > MODULE_MAX_BYTES)
      throw new EngineError(`${path}: not a regular file of at most ${MODULE_MAX_BYTES} bytes`);
    const buf = new Uint8Array(st.size + 1);
    let n = 0;
    for (;;) {
      const got = f.readSync(fd, buf, n, buf.length - n, n);
      if (got === 0) break;
      n += got;
      if (n === buf.length) throw new EngineError(`${path}: grew while it was read`);
    }
    return buf.subarray(0, n);
  } finally {
    f.closeSync(fd);
  }
}
