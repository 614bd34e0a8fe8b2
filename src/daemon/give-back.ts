// The daemon gives memory back once a burst of container ends is over. Each wasm run is a
// thread with its own JS heap and its own share of glibc's malloc arenas (wasmtime's stores
// are Rust, on glibc malloc); when the thread ends, what it freed stays with the allocators:
// glibc keeps free arena memory until something trims it, and the main thread's JS heap
// keeps the garbage of every sandbox until a collection. Measured after 200 containers were
// deleted (bench/shared/daemon-smaps.ts): malloc_trim(0) alone returned 11 MiB of 16 MiB of
// arenas.
//
// Debounced: one pass a while after the last run ended, so a stream of deletes pays once,
// and never more often than a minimum interval, so a busy daemon does not pay every second.

import { mallocTrim } from "../linux/libc.ts";

/** How the daemon's log line of a pass begins. */
export const GAVE_BACK = "memory given back";

/** A full collection of this thread's heap; the heap's size after (process.memoryUsage counts its ArrayBuffers too). */
function fullCollection(): number {
  Bun.gc(true);
  return process.memoryUsage().heapUsed;
}

/**
 * Collections after the first, at most: each runs only while the one before freed at least
 * FREED_AGAIN_BYTES.
 */
const MAX_MORE_COLLECTIONS = 3;
const FREED_AGAIN_BYTES = 1 << 20;

/**
 * Full collections of this thread's heap until one frees little, JSC's shrink, then malloc_trim.
 *
 * One collection is not enough. A native object of Bun's found dead by a collection lets go of
 * the JS values it held (its strong handles) only when it is finalized, in that collection's
 * sweep: those values are garbage for the next one. The one that matters here: a read pending
 * on a `Bun.file(fd).stream()` holds a 256 KiB buffer (whatever chunk size is asked), and the
 * stdin relay of every wasm run has one pending (./stdin-relay.ts); cancelled, the buffer goes
 * with the second collection after its reader's. Measured after 300 killed pooled runs were
 * deleted: 300 such buffers (79 MiB of the heap's count) still live after the first collection,
 * none after the second, and the daemon's memory at that pass +25% over its start with one
 * collection, +7% with two (bench/shared/give-back.ts).
 *
 * `collect` runs one and says the heap's size after, its buffers included; a test passes its
 * own. Returns how many collections ran.
 */
export function giveBack(collect: () => number = fullCollection): number {
  let size = collect();
  let collections = 1;
  for (let i = 0; i < MAX_MORE_COLLECTIONS; i++) {
    const after = collect();
    collections++;
    const freed = size - after;
    size = after;
    if (freed < FREED_AGAIN_BYTES) break;
  }
  (Bun as { shrink?: () => void }).shrink?.();
  mallocTrim();
  return collections;
}

/** The timer calls giveBackWhenQuiet schedules with; a test passes a fake clock. */
export interface PassClock {
  now(): number;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(timer: unknown): void;
}

const realClock: PassClock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => {
    const t = setTimeout(fn, ms);
    // A pending pass must not keep a stopping daemon alive.
    t.unref?.();
    return t;
  },
  clearTimer: (t) => clearTimeout(t as ReturnType<typeof setTimeout>),
};

export interface GiveBackSchedule {
  /** Quiet time after the last end before a pass. */
  quietMs: number;
  /**
   * Least time between two passes. A full collection of the daemon's heap costs tens of ms
   * with a thousand sandboxes, and a pass makes two or more, during which no pod's call is answered: on a busy daemon,
   * whose ends come just over `quietMs` apart, a pass per quiet point would cost that
   * every second.
   */
  minIntervalMs: number;
  pass?: () => void;
  clock?: PassClock;
}

/**
 * Returns `ended()`: call it whenever a run ends. One pass runs once `quietMs` has gone by
 * since the last call and `minIntervalMs` since the previous pass, whichever is later: so the
 * last quiet point always gets its pass, at most one every `minIntervalMs`.
 */
export function giveBackWhenQuiet(o: GiveBackSchedule): () => void {
  const { quietMs, minIntervalMs, pass = giveBack, clock = realClock } = o;
  let timer: unknown;
  let lastPass = Number.NEGATIVE_INFINITY;
  return () => {
    if (timer !== undefined) clock.clearTimer(timer);
    const now = clock.now();
    const at = Math.max(now + quietMs, lastPass + minIntervalMs);
    timer = clock.setTimer(() => {
      timer = undefined;
      lastPass = clock.now();
      pass();
    }, at - now);
  };
}
