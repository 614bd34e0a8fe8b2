// Run threads confined to a container's cpuset (RunContext.cpu.cpus: the shared-mode daemon,
// src/linux/cpuset.ts), and the threads that must not stay confined with them.
//
// A thread inherits its creator's affinity. A run thread confines itself before its module
// loads, so what it starts is confined too; but libwasmtime's WASI starts its tokio threads
// (the runtime's workers, the blocking pool that does every run's file calls) from whichever
// run thread first needs one, and they then serve every run of the process. Left on a pod's
// exclusive CPUs they would run other tenants' work there. So while confined runs exist, the
// threads of the process that are not theirs are put back on the main thread's CPUs: at each
// confined run's start and end, and every STRAY_SWEEP_MS meanwhile (a tokio thread can start
// at any file call). A wasi:http service's threads (the http library's, named "bunwasi-http-…",
// a name each inherits from the thread that starts it) are the library's to place: it holds a
// confined service's to its cpuset itself, and an unconfined one's descend from unconfined
// threads. Required lazily: the executor loads the engine and never binds libc.

import { readdirSync, readFileSync } from "node:fs";

const STRAY_SWEEP_MS = 1000;

type Libc = typeof import("../../linux/libc.ts");
const libc = (): Libc => require("../../linux/libc.ts") as Libc;

/** Moves thread `tid` of this process to `cpus` (undefined: the main thread's CPUs). Throws, saying why, if refused. */
export function confineThread(tid: number, cpus: number[] | undefined): void {
  const c = libc();
  const to = cpus ?? mainCpus(c);
  const [r, e] = c.schedSetaffinity(tid, to);
  if (r < 0) throw new Error(`cannot move run thread ${tid} to CPUs ${to.join(",")}: ${c.strerror(e)}`);
}

/** The CPUs the calling thread (the caller's main thread) may run on: where an unconfined run goes back to. */
export function callerCpus(): number[] {
  return mainCpus(libc());
}

function mainCpus(c: Libc): number[] {
  const [own, e] = c.schedGetaffinity(0);
  if (!own) throw new Error(`sched_getaffinity: ${c.strerror(e)}`);
  return own;
}

/** Whether thread `tid` of this process is one of a wasi:http service's (see the head of this file). */
function isHttpServiceThread(tid: string): boolean {
  try {
    return readFileSync(`/proc/self/task/${tid}/comm`, "utf8").startsWith("bunwasi-http-");
  } catch {
    return false;
  }
}

export class ConfinedThreads {
  /** The confined runs' threads: theirs to keep. */
  private readonly runs = new Set<number>();
  /** Confined runs whose thread is not known yet (it confines itself first): no sweep until it is. */
  private starting = 0;
  private timer: ReturnType<typeof setInterval> | undefined;

  /** A confined run is starting; call the returned function with its thread id once known (undefined: it never ran). */
  start(): (tid: number | undefined) => void {
    this.starting++;
    let told = false;
    return (tid) => {
      if (told) return;
      told = true;
      this.starting--;
      if (tid !== undefined) this.runs.add(tid);
      this.sweep();
    };
  }

  /** The run on `tid` (started unconfined) was confined since (an Update): its thread is its own. */
  hold(tid: number): void {
    this.runs.add(tid);
    this.sweep();
  }

  /** The run on `tid` is over (its thread ended or ends). */
  end(tid: number | undefined): void {
    if (tid !== undefined) this.runs.delete(tid);
    this.sweep();
  }

  /** Puts every other thread of the process that is off the main thread's CPUs back on them. */
  private sweep(): void {
    if (this.runs.size === 0 && this.starting === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    } else if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), STRAY_SWEEP_MS);
      this.timer.unref?.();
    }
    if (this.starting > 0) return;
    const c = libc();
    const main = mainCpus(c);
    let tids: string[];
    try {
      tids = readdirSync("/proc/self/task");
    } catch {
      return;
    }
    for (const t of tids) {
      const tid = Number(t);
      if (this.runs.has(tid) || isHttpServiceThread(t)) continue;
      const [cpus] = c.schedGetaffinity(tid);
      // Gone meanwhile, or where it belongs.
      if (!cpus || (cpus.length === main.length && cpus.every((x, i) => x === main[i]))) continue;
      c.schedSetaffinity(tid, main);
    }
  }
}
