// The order in which a run pool's thread polls its runs (./pool-worker.ts), weighted by the
// spec's CPU shares as CFS weighs threads: each run's CPU time counts against it divided by its
// weight (shares / 1024; none: 1024), and the run that has used the least so weighted runs
// next. A run of its own gets its weight as its thread's nice value (./cpu-throttle.ts), among
// all of the daemon's threads; a pooled run's weighs only against the runs of its own pool
// thread (the threads themselves are the kernel's to weigh, all at nice 0).
//
// A run that waited (a sleep, stdin) comes back at no less than the weighted time of the last
// run polled, as CFS places a woken thread at its queue's minimum: it does not get to make up
// its wait by holding the thread.

/** The weight of a run without shares (CFS's nice 0). */
export const SHARES_DEFAULT = 1024;

/** What the queue keeps of a run: its weighted CPU time (ns). */
export interface Weighted {
  vruntime: number;
}

export class FairQueue<T extends Weighted> {
  private readonly items: T[] = [];
  /** The weighted time of the last run taken. */
  private floor = 0;

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    if (item.vruntime < this.floor) item.vruntime = this.floor;
    this.items.push(item);
  }

  /** The run with the least weighted time (the first pushed among equals), taken out. */
  take(): T | undefined {
    let best = -1;
    for (let i = 0; i < this.items.length; i++) {
      if (best < 0 || (this.items[i] as T).vruntime < (this.items[best] as T).vruntime) best = i;
    }
    if (best < 0) return undefined;
    const [item] = this.items.splice(best, 1) as [T];
    this.floor = Math.max(this.floor, item.vruntime);
    return item;
  }

  /** Counts `cpuNs` of CPU time to `item`, weighted by its `shares` (0: none, the default weight). */
  static charge(item: Weighted, cpuNs: number, shares: number): void {
    item.vruntime += (cpuNs * SHARES_DEFAULT) / (shares > 0 ? shares : SHARES_DEFAULT);
  }
}
