// A run's CPU quota in the shared-mode daemon, where a module has no cgroup of its own (issue
// 16, item 3): the run's thread throttles itself by its own CPU time at its epoch callbacks.
//
// The spec's linux.resources.cpu is in the run's words (./run-atomics.ts: quota and period in
// µs, shares), set at start and by Update. While some run has a quota, the engine bumps the
// epoch every CPU_TICK_MS (./engine.ts), so a module busy in wasm reaches its callback that
// often; there the thread reads its CPU time (CLOCK_THREAD_CPUTIME_ID) and, when it has used
// more than quota/period of the time since, sleeps until it is back within it. A token bucket
// of at most one quota, as a CFS period refills at most one quota: a thread idle for a while
// gets one period's burst, not what it saved. The sleep is the run's interruptible one: a
// kill or a pause is seen at once, and an Update within a period.
//
// Shares are a weight among the daemon's threads: the thread's nice value (CFS weights are
// 1.25x per nice step, 1024 at nice 0), set on itself when they change.

import { CPU_CHECKS, CPU_PERIOD, CPU_QUOTA, CPU_SHARES, CPU_THROTTLED, THROTTLED_NS } from "./run-atomics.ts";

/** How often the engine bumps the epoch while a run has a quota: the throttle's granularity. */
export const CPU_TICK_MS = 10;

/**
 * The token bucket: CPU the thread may still use (ns), refilled at quota/period per ns of wall
 * time up to one quota. Pure (the clock readings come in), for the unit tests.
 */
export class CpuBucket {
  private tokens: number;

  constructor(
    readonly quotaNs: number,
    readonly periodNs: number,
    private wallNs: number,
    private cpuNs: number,
  ) {
    this.tokens = quotaNs;
  }

  /** At wall time `wallNs` having used `cpuNs`: how long to sleep (ns) before running on; 0 for none. */
  debt(wallNs: number, cpuNs: number): number {
    const rate = this.quotaNs / this.periodNs;
    this.tokens = Math.min(this.quotaNs, this.tokens + (wallNs - this.wallNs) * rate) - (cpuNs - this.cpuNs);
    this.wallNs = wallNs;
    this.cpuNs = cpuNs;
    return this.tokens >= 0 ? 0 : Math.ceil(-this.tokens / rate);
  }
}

/** The nice value whose CFS weight is closest to `shares` (1024 = nice 0), within -20..19. */
export function niceOfShares(shares: number): number {
  const nice = Math.round(Math.log(1024 / shares) / Math.log(1.25));
  return Math.max(-20, Math.min(19, nice));
}

/** What the throttle needs of the thread it runs on (the real ones by default; fakes in tests). */
export interface ThreadClock {
  /** Monotonic wall time, ns. */
  wallNs(): number;
  /** This thread's CPU time, ns. */
  cpuNs(): number;
  /** Sets this thread's nice value. */
  nice(n: number): void;
  /** Sleeps `ns` unless the run is killed first (a paused run stays until resumed); true if killed. */
  sleep(ns: number): boolean;
}

/** The run thread's side: `check()` at every epoch callback. */
export class CpuThrottle {
  private bucket?: CpuBucket;
  private limits = "";
  private shares = 0;
  private readonly slept: BigInt64Array;

  constructor(
    private readonly words: Int32Array,
    private readonly clock: ThreadClock,
  ) {
    this.slept = new BigInt64Array(words.buffer as SharedArrayBuffer);
  }

  /** Whether these words carry CPU limits at all (the executor's kill word does not: its cgroup limits it). */
  static applies(words: Int32Array): boolean {
    return words.length > CPU_THROTTLED && words.buffer instanceof SharedArrayBuffer && words.buffer.byteLength >= (THROTTLED_NS + 1) * 8;
  }

  /** Applies the shares now and the quota from now on; sleeps off what is over it. True if killed meanwhile. */
  check(): boolean {
    const { words, clock } = this;
    const shares = Atomics.load(words, CPU_SHARES);
    if (shares !== this.shares) {
      this.shares = shares;
      clock.nice(shares > 0 ? niceOfShares(shares) : 0);
    }
    const quota = Atomics.load(words, CPU_QUOTA);
    const period = Atomics.load(words, CPU_PERIOD);
    if (quota <= 0 || period <= 0) {
      this.bucket = undefined;
      this.limits = "";
      return false;
    }
    const limits = `${quota}/${period}`;
    if (!this.bucket || limits !== this.limits) {
      // New limits (start, Update): a fresh bucket, full.
      this.limits = limits;
      this.bucket = new CpuBucket(quota * 1000, period * 1000, clock.wallNs(), clock.cpuNs());
    }
    Atomics.add(words, CPU_CHECKS, 1);
    let throttled = false;
    for (;;) {
      const ns = this.bucket.debt(clock.wallNs(), clock.cpuNs());
      if (ns <= 0) return false;
      if (!throttled) {
        throttled = true;
        Atomics.add(words, CPU_THROTTLED, 1);
      }
      // At most a period at a time, so that an Update is seen within one.
      const t0 = clock.wallNs();
      const killed = clock.sleep(Math.min(ns, period * 1000));
      Atomics.add(this.slept, THROTTLED_NS, BigInt(Math.max(0, Math.round(clock.wallNs() - t0))));
      if (killed) return true;
      if (Atomics.load(words, CPU_QUOTA) !== quota || Atomics.load(words, CPU_PERIOD) !== period) return false;
    }
  }
}
