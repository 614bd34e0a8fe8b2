// Messages between WasmtimeEngine (main thread) and its run worker.

import type { WasmShape } from "./wasm-shape.ts";

export type ModuleKind = "wasm" | "wat" | "serialized";

export interface RunRequest {
  libPath: string;
  /** Post the run thread's Linux id ({ type: "thread" }) before running. */
  wantThreadId?: boolean;
  /** The run thread gives up the capabilities over files first (LoadOptions.noFileCapabilities). */
  dropFileCaps?: boolean;
  /** The run thread confines itself to these CPUs first (CpuLimits.cpus, the container's cpuset). */
  cpus?: number[];
  /**
   * Collect this thread's JS garbage (module loading, linking) before the guest runs: the
   * thread then sits in wasm, where JSC never collects. For callers that hold many runs at
   * once (shared mode): -0.35 MiB per idle run, measured, for ~1 ms per start.
   */
  collectBeforeRun?: boolean;
  /** wasm_engine_t* created on the main thread (engines are Send + Sync). */
  enginePtr: number;
  module: Uint8Array;
  kind: ModuleKind;
  /** A component (WASI preview 2, `wasi:cli/run`) rather than a core module; `kind` says its form. */
  component?: boolean;
  /** Source to fall back on when `kind === "serialized"` fails to deserialize (stale cache). */
  fallback?: { module: Uint8Array; kind: "wasm" | "wat" };
  /**
   * A compile-cache hit by path (`module` is then empty): wasmtime maps the file, so its pages
   * are shared through the page cache, and no copy passes through either thread's heap.
   */
  serializedPath?: string;
  /** With serializedPath: where the source is, read only if the artifact will not deserialize. */
  fallbackPath?: { path: string; kind: "wasm" | "wat" };
  /** Post back the serialized module after compiling (for the compile cache). */
  wantSerialized: boolean;
  args: string[];
  env: [string, string][];
  rootDir?: string;
  rootReadOnly: boolean;
  /** [host path, guest path, read-only] of each further preopened directory. */
  preopens?: [string, string, boolean][];
  stdin: string | null; // path, or null = inherit
  stdout: string | null;
  stderr: string | null;
  stderrFd?: number; // where to write a trap message when stderr is inherited/fd
  /** Export to call: "_start" (for a component: `wasi:cli/run`), or a function taking no arguments. */
  entry: string;
  /** All of the store's memories and tables together (./store.ts). */
  memoryLimitBytes?: number;
  /** The module's memories, tables and instances (./wasm-shape.ts), read where the limit needs them; absent: unknown. */
  shape?: WasmShape;
  /**
   * Where ./wasi-shadows.ts is for this process (from source, or embedded in the binary): the
   * run thread loads it by this path on first need, so that it is not part of every run
   * thread's script.
   */
  shadowsScript: string;
  /**
   * A run pool's module opens files (it imports path_open or fd_renumber): the pool puts the
   * file guard in its store (./pool-guard.ts). A run of its own always has the guard.
   */
  fileGuard?: boolean;
  /** The most WASI handles the module may hold open at once, stdio and preopens included (./file-guard.ts); absent = no cap. */
  maxOpenFiles?: number;
  /**
   * stdin is a fifo whose feeder says when it has news (RunContext.watchStdin; a run pool is
   * woken then): until its first news the fifo has no writer yet, and an empty read is not EOF.
   */
  stdinNews?: boolean;
  /** stdin, stdout and stderr are a terminal (RunContext.terminal). */
  terminal?: boolean;
  /** Scripts whose default export is a HostFunctions (../host.ts): imported and linked by the worker. */
  hostModules: string[];
  /** Int32Array view: [0] = signal number once killed (0 = running); [1] = 1 while paused. */
  kill: SharedArrayBuffer;
}

export type RunStats = {
  compileMs?: number;
  deserializeMs?: number;
  instantiateMs: number;
  runMs: number;
  cacheHit?: boolean;
  /** The collection before the entry call (a run on the calling thread). */
  gcMs?: number;
  /** A wasi:http service (./http/serve.ts): start time, requests received and failed, compiled at start. */
  startMs?: number;
  requests?: number;
  failedRequests?: number;
  compiled?: boolean;
  /** The run was one of many on a run pool's thread (./pool.ts), not on a thread of its own. */
  pooled?: boolean;
};

export type WorkerMessage =
  | { type: "serialized"; bytes: Uint8Array }
  | { type: "exit"; code: number; message?: string; stats: RunStats }
  /** The Linux thread id of the run's thread (for its CPU time in /proc/self/task/<tid>). */
  | { type: "thread"; tid: number };
