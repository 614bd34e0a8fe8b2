// How many threads this engine started for runs are alive: a run's Worker (./worker.ts), from
// the run it was taken for, and a pool's (./pool-worker.ts), from its creation; each until its
// `close` event, when what it held is free. Told to LoadOptions.onRunThreads on each change (the daemon gives memory back once
// they are gone, and says how many there were).

let alive = 0;
let listener: ((alive: number) => void) | undefined;

/** Counts `w` until it has ended; returns it. */
export function countRunThread(w: Worker): Worker {
  alive++;
  listener?.(alive);
  w.addEventListener(
    "close",
    () => {
      alive--;
      listener?.(alive);
    },
    { once: true },
  );
  return w;
}

/** `fn` is told the count now and on each change. */
export function watchRunThreads(fn: (alive: number) => void): void {
  listener = fn;
  fn(alive);
}
