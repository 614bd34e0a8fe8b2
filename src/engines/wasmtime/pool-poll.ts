// poll_oneoff with fd subscriptions in a run pool's store (./pool-worker.ts), answered as
// wasmtime's own poll_oneoff answers it on a thread of its own (its WASI preview 1, wasmtime
// 48): every subscription is checked first (a clock of another id: EINVAL; a read of anything
// but stdin or a file, a write of anything but stdout, stderr or a file: EBADF for the whole
// call); then it waits until one is ready, and a file or stdio opened by path (the daemon's
// stdio is) is ready at once, so it never waits here: each fd subscription is an event
// (nbytes 1, no flags), in the order subscribed, and no clock (wasmtime's timer is not ready at
// its first look, even for a timeout of 0: measured, test/unit/engines/file-guard.test.ts). Only polls whose fds are all the guest's stdio are answered here; one
// that names a file the guest opened goes to wasmtime's own through the file guard's
// trampoline (./pool-guard.ts), which answers it at once for the same reason. (The layouts of
// subscriptions and events: ../wasi-abi.ts.)

import {
  CLOCK_MONOTONIC,
  CLOCK_REALTIME,
  ERRNO_BADF,
  ERRNO_INVAL,
  EVENT_SIZE,
  EVENTTYPE_CLOCK,
  EVENTTYPE_FD_READ,
  EVENTTYPE_FD_WRITE,
  SUBSCRIPTION_SIZE,
} from "../wasi-abi.ts";
import type { StdioRole } from "./file-guard.ts";

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
