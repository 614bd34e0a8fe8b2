// What a run's instantiation or call ended with, as an exit code (README "Exit codes"): for a
// core module on a thread of its own or in a pool (./run-module.ts, ./pool-worker.ts) and for a
// component (./component.ts) alike.

import type { Pointer } from "bun:ffi";
import { EXIT_TRAP } from "../engine.ts";
import { errorMessage, TRAP_CODE_INTERRUPT, trapMessage, type WasmtimeLib } from "./ffi.ts";

/** Exit code for an error out of instantiate/call (freeing it): its exit status, the kill's (`sig`, 0: none), or a trap's. */
export function errorOutcome(lib: WasmtimeLib, err: Pointer, sig: number): { code: number; message?: string } {
  const status = new Int32Array(1);
  if (lib.wasmtime_error_exit_status(err, status)) {
    lib.wasmtime_error_delete(err);
    return { code: (status[0] ?? 0) & 0xff };
  }
  const message = errorMessage(lib, err);
  lib.wasmtime_error_delete(err);
  if (sig) return { code: 128 + sig };
  return { code: EXIT_TRAP, message };
}

/** Exit code (and message) for an error/trap result (freeing them), or null if the call succeeded. */
export function outcomeOf(
  lib: WasmtimeLib,
  err: Pointer | null,
  trap: Pointer | null,
  kill: Int32Array,
  exitStatus: number | undefined,
): { code: number; message?: string } | null {
  const sig = Atomics.load(kill, 0);
  if ((err || trap) && exitStatus !== undefined) {
    if (err) lib.wasmtime_error_delete(err);
    if (trap) lib.wasm_trap_delete(trap);
    // like a process: the parent sees the low 8 bits
    return { code: exitStatus & 0xff };
  }
  if (err) return errorOutcome(lib, err, sig);
  if (trap) {
    const codeBuf = new Uint8Array(1);
    const hasCode = lib.wasmtime_trap_code(trap, codeBuf);
    const msg = trapMessage(lib, trap);
    lib.wasm_trap_delete(trap);
    if (sig || (hasCode && codeBuf[0] === TRAP_CODE_INTERRUPT)) return { code: 128 + (sig || 9) };
    return { code: EXIT_TRAP, message: msg };
  }
  return null;
}
