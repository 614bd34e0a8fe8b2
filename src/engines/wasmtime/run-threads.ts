// How many threads this engine started for runs are alive: a run's Worker (./worker.ts), from
// the run it was taken for, and a pool's (./pool-worker.ts), from its creation; each until its
// thread has ended, when what it held is free. Told to LoadOptions.onRunThreads on each change (the
// daemon gives memory back once they are gone, and says how many there were).
//
// A Worker's `close` event is not its thread's end: Bun dispatches it once the thread's event
// loop is over, and the thread then still tears down its VM and its heap, whose pages go back
// only as it exits (of 10 Workers terminated here, 9 were still in /proc/self/task at their
// `close`). A pass right after it would read memory the thread is about to return. So a thread
// whose Linux id is known (`threadOf`: its first message says it) counts until /proc/self/task
// has it no more, looked at every EXIT_LOOK_MS after its `close`: there is no event for a
// thread's exit (only its joiner, Bun, waits on it).

import { existsSync } from "node:fs";

/** Between two looks at an ended Worker's thread in /proc/self/task (ms). */
const EXIT_LOOK_MS = 20;

export interface ThreadExits {
  /** Whether thread `tid` of this process is still there. */
  exists(tid: number): boolean;
  /** Calls `fn` after `ms` (a timer that keeps no process alive). */
  later(fn: () => void, ms: number): void;
}

const procThreads: ThreadExits = {
  exists: (tid) => existsSync(`/proc/self/task/${tid}`),
  later: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
  },
};

export class RunThreadCount {
  private alive = 0;
  private listener: ((alive: number) => void) | undefined;
  private readonly tids = new WeakMap<Worker, number>();

  constructor(private readonly exits: ThreadExits = procThreads) {}

  /** Counts `w` until its thread has ended; returns it. */
  count(w: Worker): Worker {
    this.alive++;
    this.listener?.(this.alive);
    w.addEventListener("close", () => this.ended(this.tids.get(w)), { once: true });
    return w;
  }

  /** `w`'s thread is Linux thread `tid` (its first message says so): counted until that thread is gone. */
  threadOf(w: Worker, tid: number): void {
    this.tids.set(w, tid);
  }

  private ended(tid: number | undefined): void {
    if (tid !== undefined && this.exits.exists(tid)) {
      this.exits.later(() => this.ended(tid), EXIT_LOOK_MS);
      return;
    }
    this.alive--;
    this.listener?.(this.alive);
  }

  /** `fn` is told the count now and on each change. */
  watch(fn: (alive: number) => void): void {
    this.listener = fn;
    fn(this.alive);
  }
}

/** The process's count: the engine's every run thread. */
const runThreads = new RunThreadCount();

export const countRunThread = (w: Worker): Worker => runThreads.count(w);
export const runThreadIs = (w: Worker, tid: number): void => runThreads.threadOf(w, tid);
export const watchRunThreads = (fn: (alive: number) => void): void => runThreads.watch(fn);
