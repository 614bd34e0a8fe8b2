// A signal that wakes one thread of this process out of a blocking call with EINTR, for the
// shared-mode daemon (src/daemon/unstick.ts). A binding of its own, beside ./libc.ts (the shim's
// one libc binding), which every run thread of the daemon evaluates: only the daemon's main
// thread loads this file. Linux on x86_64 and aarch64.

import { dlopen, FFIType, type Pointer, ptr, read } from "bun:ffi";

/** A real-time signal neither glibc (32, 33) nor Bun's runtime handles. */
export const WAKE_SIGNAL = 40;
/** sizeof(struct sigaction) in glibc on x86_64 and aarch64: handler, 128-byte mask, flags (+pad), restorer. */
const SIGACTION_SIZE = 152;
const SIGACTION_FLAGS = 136;
const TGKILL: Record<string, number> = { x64: 234, arm64: 131 };

type Wakes = {
  sigaction: (sig: number, act: Pointer, old: Pointer | null) => number;
  abs: { ptr: number };
  syscall: (...a: number[]) => number | bigint;
  errno: () => Pointer | null;
};
let bound: Wakes | undefined;
let installed = false;

function wakes(): Wakes {
  if (!bound) {
    const { i32, i64, ptr: P } = FFIType;
    const s = dlopen("libc.so.6", {
      sigaction: { args: [i32, P, P], returns: i32 },
      // Its address is the handler: a function that does nothing with its argument and touches
      // nothing else, so safe in any thread at any moment. Interrupting is the whole point.
      abs: { args: [i32], returns: i32 },
      syscall: { args: [i64, i64, i64, i64], returns: i64 },
      __errno_location: { args: [], returns: P },
    }).symbols;
    bound = {
      sigaction: s.sigaction as Wakes["sigaction"],
      abs: s.abs as unknown as { ptr: number },
      syscall: s.syscall as Wakes["syscall"],
      errno: s.__errno_location as () => Pointer | null,
    };
  }
  return bound;
}

function errno(w: Wakes): number {
  const at = w.errno();
  return at ? read.i32(at, 0) : 0;
}

/**
 * Installs WAKE_SIGNAL's handler once for the process: a handler that does nothing, without
 * SA_RESTART, so that the blocking call a thread is in when it arrives (an open of a fifo, a
 * read of one) fails with EINTR instead of going on. [0, 0] or [-1, errno].
 */
export function installWakeSignal(): [number, number] {
  if (installed) return [0, 0];
  const w = wakes();
  const act = new Uint8Array(SIGACTION_SIZE);
  const v = new DataView(act.buffer);
  v.setBigUint64(0, BigInt(w.abs.ptr), true);
  v.setInt32(SIGACTION_FLAGS, 0, true); // no SA_RESTART, no SA_SIGINFO; the mask stays empty
  if (w.sigaction(WAKE_SIGNAL, ptr(act), null) < 0) return [-1, errno(w)];
  installed = true;
  return [0, 0];
}

/** tgkill(2) of a thread of this process. */
export function tgkill(tid: number, sig: number): [number, number] {
  const nr = TGKILL[process.arch];
  if (nr === undefined) throw new Error(`bunwasi runs on Linux x86_64 and aarch64 only (this is ${process.arch})`);
  const w = wakes();
  return Number(w.syscall(nr, process.pid, tid, sig)) < 0 ? [-1, errno(w)] : [0, 0];
}
