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

/** A full collection of this thread's heap, JSC's shrink, then malloc_trim. */
export function giveBack(): void {
  Bun.gc(true);
  (Bun as { shrink?: () => void }).shrink?.();
  mallocTrim();
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
   * with a thousand sandboxes, during which no pod's call is answered: on a busy daemon,
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
