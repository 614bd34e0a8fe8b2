// How many threads this engine started for runs are alive: a run's Worker (./worker.ts), from
// the run it was taken for, and a pool's (./pool-worker.ts), from its creation; each until its
// `close` event, when what it held is free. Told to LoadOptions.onRunThreads on each change (the
// daemon gives memory back once they are gone, and says how many there were).

export class RunThreadCount {
  private alive = 0;
  private listener: ((alive: number) => void) | undefined;

  /** Counts `w` until it has ended; returns it. */
  count(w: Worker): Worker {
    this.alive++;
    this.listener?.(this.alive);
    w.addEventListener(
      "close",
      () => {
        this.alive--;
        this.listener?.(this.alive);
      },
      { once: true },
    );
    return w;
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
export const watchRunThreads = (fn: (alive: number) => void): void => runThreads.watch(fn);
