// Kill signals handled in C (./native/kill-signals.c), for an executor that runs its module
// on its only JS thread. A Bun Worker is a whole second JS VM (about 4.5 MiB of every
// executor, measured); without one, the thread that would run a JavaScript signal handler
// is inside wasm, so the handlers must not need JavaScript (docs/ARCHITECTURE.md, "Pitfalls").
//
// The library is built by scripts/build-native.sh and shipped in the executor directory
// (the wasmtime engine lists it among its executor files). Where it is missing, the executor
// falls back to the Worker and JavaScript handlers.

import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { ExecutorFile, ThreadKill } from "./engine.ts";

/** The size of `kill_word` in native/kill-signals.c: six int32 words, an engine's run words. */
const RUN_WORDS_BYTES = 24;

export const KILL_LIB_NAME = "libbunwasi-kill.so";

const REPO_ROOT = resolve(import.meta.dir, "..", "..");

/**
 * Where the built library may be on the host: BUNWASI_KILL_LIB; beside the binary, or in
 * ../lib (scripts/install.sh) or ../native (build/bin next to build/native); the checkout's
 * build/native when running from source.
 */
export function killLibCandidates(): string[] {
  return nativeLibCandidates(KILL_LIB_NAME, process.env.BUNWASI_KILL_LIB);
}

/** Where a native library of ours (scripts/build-native.sh) may be, as for the kill library above; `env` overrides. */
export function nativeLibCandidates(name: string, env?: string): string[] {
  if (env) return [env];
  const exeDir = dirname(process.execPath);
  return [
    join(exeDir, name),
    join(exeDir, "..", "lib", name),
    join(exeDir, "..", "native", name),
    join(REPO_ROOT, "build", "native", name),
  ];
}

/** The library as an executor file, if it is built (an engine that can use it lists it). */
export function killLibFile(): ExecutorFile | undefined {
  const source = killLibCandidates().find((p) => existsSync(p));
  return source ? { name: KILL_LIB_NAME, source, sharedObject: true } : undefined;
}

/**
 * Installs C handlers for `signals`: from now on the first of them is recorded in the kill
 * word, interrupts running code (once an engine said how, ThreadKill.setInterrupt), ends a
 * ThreadKill.sleep, and `graceMs` later ends the process with 128 + that signal. Undefined
 * if the library cannot be loaded (the caller then handles signals in JavaScript).
 */
export function installKillSignals(libPath: string, signals: number[], graceMs: number): ThreadKill | undefined {
  if (!existsSync(libPath)) return undefined;
  const { dlopen, FFIType, toArrayBuffer } = require("bun:ffi") as typeof import("bun:ffi");
  const { symbols: c } = dlopen(libPath, {
    bunwasi_kill_install: { args: [FFIType.ptr, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    bunwasi_kill_set_interrupt: { args: [FFIType.ptr, FFIType.ptr], returns: FFIType.void },
    bunwasi_kill_word: { args: [], returns: FFIType.ptr },
    bunwasi_kill_sleep: { args: [FFIType.u64], returns: FFIType.i32 },
  });
  const list = new Int32Array(signals);
  const rc = c.bunwasi_kill_install(list, list.length, Math.max(1, Math.round(graceMs)));
  if (rc !== 0) throw new Error(`kill signals: cannot install the handlers (errno ${-rc})`);
  const word = c.bunwasi_kill_word();
  if (!word) throw new Error("kill signals: no kill word");
  return {
    word: new Int32Array(toArrayBuffer(word, 0, RUN_WORDS_BYTES)),
    sleep: (ns) => c.bunwasi_kill_sleep(ns) !== 0,
    setInterrupt: (fn, arg) => c.bunwasi_kill_set_interrupt(fn as never, arg as never),
  };
}
