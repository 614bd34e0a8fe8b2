// The Engine interface (DESIGN.md "Engines") and the context a run gets.

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

/** Exit code used when a module traps (same as the wasmtime CLI on unix: 128+SIGABRT). */
export const EXIT_TRAP = 134;
/** Exit code for failures before the module starts (bad module, link error, missing file). */
export const EXIT_ENGINE_ERROR = 125;

const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

/** Signal number from an AbortSignal reason (number, "SIGTERM", "TERM", {signal}); default 9. */
export function signalNumber(reason: unknown): number {
  if (typeof reason === "number" && Number.isInteger(reason) && reason > 0 && reason < 128) return reason;
  if (typeof reason === "string") {
    const up = reason.toUpperCase();
    const n = SIGNALS[up] ?? SIGNALS[`SIG${up}`];
    if (n) return n;
    if (/^\d+$/.test(reason)) return signalNumber(Number(reason));
  }
  if (reason && typeof reason === "object" && "signal" in reason) {
    return signalNumber((reason as { signal: unknown }).signal);
  }
  return 9;
}

export function isWasmBinary(b: Uint8Array): boolean {
  return b.length >= 4 && b[0] === 0 && b[1] === 0x61 && b[2] === 0x73 && b[3] === 0x6d;
}

/** Heuristic: text starting (after whitespace/comments) with "(module" or "(component". */
export function isWat(b: Uint8Array): boolean {
  const head = new TextDecoder().decode(b.subarray(0, 4096));
  const s = head.replace(/^(\s|;;[^\n]*\n|\(;[\s\S]*?;\))*/, "");
  return s.startsWith("(module");
}
