// WASI's poll_oneoff as a sleep a kill can end. wasmtime's own poll_oneoff blocks the run
// thread in the kernel for the whole timeout, and an epoch interrupt is only seen when the
// call returns: a module asleep for an hour would keep its thread (and memory) for an hour
// after a kill. The worker (./worker.ts) shadows it with this: a poll that only waits for
// clocks (what sleep(), nanosleep() and usleep() compile to) waits on the run's kill word
// with Atomics.wait, which the killing thread wakes with Atomics.notify. An absolute deadline
// on the realtime or monotonic clock is the time left until it on that clock (guestClocks).
// Anything else (fd subscriptions, absolute CPU-time clocks) goes to wasmtime's implementation
// unchanged. (The layouts of subscriptions and events: ../wasi-abi.ts.)

import { CLOCK_MONOTONIC, CLOCK_REALTIME, EVENT_SIZE, EVENTTYPE_CLOCK, SUBCLOCKFLAGS_ABSTIME, SUBSCRIPTION_SIZE } from "../wasi-abi.ts";
import { BLOCKED, KILL, PAUSED } from "./run-atomics.ts";

/** Now on a WASI clock (clockid), in nanoseconds, as the guest reads it; undefined: not one we know. */
export type GuestClock = (id: number) => bigint | undefined;

/**
 * The clocks a run's guest reads with clock_time_get, as wasmtime's WASI gives them: realtime
 * in nanoseconds since the epoch; monotonic in nanoseconds since its WASI context was made.
 * `monotonicBase`: process.hrtime.bigint() taken just after the store's WASI context was set:
 * ours then lags the guest's by a little, so a deadline converted with it is never early.
 * Realtime is rounded down to the millisecond (Date.now) for the same reason.
 */
export function guestClocks(monotonicBase: bigint): GuestClock {
  return (id) => {
    if (id === CLOCK_REALTIME) return BigInt(Date.now()) * 1_000_000n;
    if (id === CLOCK_MONOTONIC) return process.hrtime.bigint() - monotonicBase;
    return undefined;
  };
}

/**
 * A clock subscription's timeout as a time to wait from now: an absolute one (`deadline` on a
 * clock that reads `now`) is what is left until it, 0 if it has passed. In bigint: a deadline
 * of 2^64-1 ns neither wraps nor loses its place.
 */
export function timeLeft(timeout: bigint, absolute: boolean, now: bigint): bigint {
  if (!absolute) return timeout;
  return timeout > now ? timeout - now : 0n;
}

export interface ClockWait {
  /** How long to wait, in nanoseconds (the earliest relative timeout). */
  timeoutNs: bigint;
  /** userdata of each subscription that is due then (the events to report). */
  due: bigint[];
}

/**
 * The wait a poll asks for, if it is one we handle: only clock subscriptions, relative ones or
 * absolute ones on a clock `clock` reads (realtime, monotonic), each read once here, as
 * wasmtime's WASI does. Undefined otherwise (including no subscriptions, which WASI answers
 * with EINVAL).
 */
export function clockOnlyWait(mem: Uint8Array, inPtr: number, n: number, clock: GuestClock): ClockWait | undefined {
  if (n === 0 || inPtr + n * SUBSCRIPTION_SIZE > mem.length) return undefined;
  const v = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  let timeoutNs: bigint | undefined;
  const subs: { userdata: bigint; timeout: bigint }[] = [];
  for (let i = 0; i < n; i++) {
    const at = inPtr + i * SUBSCRIPTION_SIZE;
    if (v.getUint8(at + 8) !== EVENTTYPE_CLOCK) return undefined;
    let timeout = v.getBigUint64(at + 24, true);
    if ((v.getUint16(at + 40, true) & SUBCLOCKFLAGS_ABSTIME) !== 0) {
      const now = clock(v.getUint32(at + 16, true));
      if (now === undefined) return undefined;
      timeout = timeLeft(timeout, true, now);
    }
    subs.push({ userdata: v.getBigUint64(at, true), timeout });
    if (timeoutNs === undefined || timeout < timeoutNs) timeoutNs = timeout;
  }
  return { timeoutNs: timeoutNs as bigint, due: subs.filter((s) => s.timeout === timeoutNs).map((s) => s.userdata) };
}

/** Writes one clock event per due subscription at `outPtr`; returns how many. */
export function writeClockEvents(mem: Uint8Array, outPtr: number, due: bigint[]): number {
  const v = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  due.forEach((userdata, i) => {
    const at = outPtr + i * EVENT_SIZE;
    mem.fill(0, at, at + EVENT_SIZE);
    v.setBigUint64(at, userdata, true);
    v.setUint16(at + 8, 0, true); // errno success
    v.setUint8(at + 10, EVENTTYPE_CLOCK);
  });
  return due.length;
}

/**
 * Waits `ns` on `words[KILL]` staying 0: resolves true if it was killed meanwhile (the killer
 * stores the signal and notifies), false when the time is up. A run paused when its sleep
 * ends stays here until resumed (or killed): a paused module takes no step, as under runc's
 * freezer, where a frozen sleeper's timer expires but the process runs only once thawed.
 */
export function interruptibleSleep(words: Int32Array, ns: bigint): boolean {
  Atomics.store(words, BLOCKED, 1);
  try {
    // Atomics.wait takes milliseconds (fractions allowed); cap at a day per wait and loop.
    let left = Number(ns) / 1e6;
    while (left > 0) {
      if (Atomics.load(words, KILL) !== 0) return true;
      const chunk = Math.min(left, 86_400_000);
      const t0 = performance.now();
      Atomics.wait(words, KILL, 0, chunk);
      left -= performance.now() - t0;
    }
    // Resume notifies PAUSED, a kill both words.
    while (Atomics.load(words, PAUSED) !== 0 && Atomics.load(words, KILL) === 0) Atomics.wait(words, PAUSED, 1);
    return Atomics.load(words, KILL) !== 0;
  } finally {
    Atomics.store(words, BLOCKED, 0);
  }
}
