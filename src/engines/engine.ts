// The Engine interface and the context a run gets (docs/ARCHITECTURE.md, "Engines").

/** Where a stdio stream of the module goes. */
export type StdioSpec =
  | { kind: "inherit" } // the running process's own fd 0/1/2
  | { kind: "path"; path: string } // a file or fifo path (stdout/stderr: created/truncated)
  | { kind: "fd"; fd: number }; // an fd of this process (opened as /proc/self/fd/N)

export interface RunContext {
  /** Module bytes (wasm binary, WAT text, or a precompiled artifact of this engine) ... */
  module?: Uint8Array;
  /** ... or a host path to read them from. One of module / modulePath is required. */
  modulePath?: string;
  /** argv as the module sees it (args[0] is the program name). */
  args: string[];
  /** Environment, "KEY=VALUE" entries (as in an OCI spec) or a record. */
  env: string[] | Record<string, string>;
  /** Host directory preopened as the guest's "/" (the container root). Omit for no filesystem. */
  rootDir?: string;
  /** Preopen root read-only (default false: writable). */
  rootReadOnly?: boolean;
  /** Working directory inside the guest (informational: WASI p1 programs start at "/"). */
  cwd?: string;
  stdin?: StdioSpec;
  stdout?: StdioSpec;
  stderr?: StdioSpec;
  /** Export to call; default "_start" (from "module.wasm#func"). */
  entry?: string;
  /** Max bytes a linear memory may grow to; undefined = unlimited. */
  memoryLimitBytes?: number;
  /**
   * Abort = stop the module promptly (epoch interrupt). `signal.reason` may be a signal number
   * (e.g. 15) or name ("SIGTERM"); run() then resolves with 128+signal. Default reason: SIGKILL (9).
   */
  signal?: AbortSignal;
}

export interface Engine {
  /** e.g. "wasmtime" */
  readonly name: string;
  /** Cheap sniff: \0asm magic, WAT text, this engine's precompiled artifacts. */
  canHandle(ctx: Pick<RunContext, "module" | "modulePath">): boolean;
  /** Compile ahead of time into an engine-specific artifact that run() accepts as `module`. */
  precompile?(module: Uint8Array): Uint8Array;
  /** Run to completion; resolves with the exit code (see the engine's README for codes). */
  run(ctx: RunContext): Promise<number>;
}

// Exit statuses and signal names live in ../common (one home for the whole shim).
export { EXIT_ENGINE_ERROR, EXIT_TRAP } from "../common/constants.ts";
export { signalNumber } from "../common/signals.ts";

export function isWasmBinary(b: Uint8Array): boolean {
  return b.length >= 4 && b[0] === 0 && b[1] === 0x61 && b[2] === 0x73 && b[3] === 0x6d;
}

/** Heuristic: text starting (after whitespace/comments) with "(module" or "(component". */
export function isWat(b: Uint8Array): boolean {
  const head = new TextDecoder().decode(b.subarray(0, 4096));
  const s = head.replace(/^(\s|;;[^\n]*\n|\(;[\s\S]*?;\))*/, "");
  return s.startsWith("(module");
}
