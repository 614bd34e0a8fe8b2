// poll_oneoff with fd subscriptions in a run pool's store (./pool-worker.ts), answered as
// wasmtime's own poll_oneoff answers it on a thread of its own (its WASI preview 1, wasmtime
// 48): every subscription is checked first (a clock of another id: EINVAL; a read of anything
// but stdin or a file, a write of anything but stdout, stderr or a file: EBADF for the whole
// call); then it waits until one is ready, and a file or stdio opened by path (the daemon's
// stdio is) is ready at once, so it never waits here: each fd subscription is an event
// (nbytes 1, no flags), in the order subscribed, and no clock (wasmtime's timer is not ready at
// its first look, even for a timeout of 0: measured, test/unit/engines/file-guard.test.ts). Only polls whose fds are all the guest's stdio are answered here; one
// that names a file the guest opened goes to wasmtime's own through the file guard's
// trampoline (./pool-guard.ts), which answers it at once for the same reason.
//
// Layouts (wasi_snapshot_preview1.witx): subscription (48 bytes): userdata u64 @0, tag u8 @8,
// then a clock's id u32 @16, timeout u64 @24, flags u16 @40, or an fd u32 @16; event (32
// bytes): userdata u64 @0, error u16 @8, type u8 @10, nbytes u64 @16, flags u16 @24.

import { EVENT_SIZE, SUBSCRIPTION_SIZE } from "./interruptible.ts";

/** Which of its stdio a guest's fd is: stdin, stdout, stderr. */
export type StdioRole = 0 | 1 | 2;

const EVENTTYPE_CLOCK = 0;
const EVENTTYPE_FD_READ = 1;
const EVENTTYPE_FD_WRITE = 2;
const CLOCK_REALTIME = 0;
const CLOCK_MONOTONIC = 1;
const ERRNO_BADF = 8;
const ERRNO_INVAL = 28;

/** The fds a poll's fd subscriptions name, in order (none: a poll of clocks only). */
export function polledFds(mem: Uint8Array, inPtr: number, n: number): number[] {
  if (inPtr + n * SUBSCRIPTION_SIZE > mem.length) return [];
  const v = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  const fds: number[] = [];
  for (let i = 0; i < n; i++) {
    const at = inPtr + i * SUBSCRIPTION_SIZE;
    const tag = v.getUint8(at + 8);
    if (tag === EVENTTYPE_FD_READ || tag === EVENTTYPE_FD_WRITE) fds.push(v.getUint32(at + 16, true));
  }
  return fds;
}

/**
 * Answers a poll with fd subscriptions on the guest's stdio (`roleOf`: which of its stdio an fd
 * is, undefined for any other) into `outPtr`: the errno, and how many events it wrote.
 */
export function stdioPoll(
  mem: Uint8Array,
  inPtr: number,
  outPtr: number,
  n: number,
  roleOf: (fd: number) => StdioRole | undefined,
): { errno: number; count: number } {
  if (n === 0 || inPtr + n * SUBSCRIPTION_SIZE > mem.length) return { errno: ERRNO_INVAL, count: 0 };
  const v = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  const ready: { userdata: bigint; type: number }[] = [];
  for (let i = 0; i < n; i++) {
    const at = inPtr + i * SUBSCRIPTION_SIZE;
    const userdata = v.getBigUint64(at, true);
    const tag = v.getUint8(at + 8);
    if (tag === EVENTTYPE_CLOCK) {
      const id = v.getUint32(at + 16, true);
      if (id !== CLOCK_REALTIME && id !== CLOCK_MONOTONIC) return { errno: ERRNO_INVAL, count: 0 };
      continue;
    }
    if (tag !== EVENTTYPE_FD_READ && tag !== EVENTTYPE_FD_WRITE) return { errno: ERRNO_INVAL, count: 0 };
    const role = roleOf(v.getUint32(at + 16, true));
    const ok = tag === EVENTTYPE_FD_READ ? role === 0 : role === 1 || role === 2;
    if (!ok) return { errno: ERRNO_BADF, count: 0 };
    ready.push({ userdata, type: tag });
  }
  if (outPtr + ready.length * EVENT_SIZE > mem.length) return { errno: ERRNO_INVAL, count: 0 };
  ready.forEach((e, i) => {
    const at = outPtr + i * EVENT_SIZE;
    mem.fill(0, at, at + EVENT_SIZE);
    v.setBigUint64(at, e.userdata, true);
    v.setUint8(at + 10, e.type);
    v.setBigUint64(at + 16, 1n, true);
  });
  return { errno: 0, count: ready.length };
}
