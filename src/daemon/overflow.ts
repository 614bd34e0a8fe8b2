// Overflow: a daemon whose open files near its budget hands the new pods to a successor
// (docs/ARCHITECTURE.md, "Overflow"). Every wasm container holds a dozen or more fds in the
// daemon (./nofile.ts) and a process may hold no more than its hard RLIMIT_NOFILE, which an
// unprivileged daemon cannot raise: where that is 20000, one daemon holds about 1200
// containers. Beyond, the daemon does what an upgrade does (./generations.ts): it starts a new
// daemon with --take-over, which takes the manager socket and every new pod, while this one
// keeps serving its own pods until containerd has deleted them, then exits (under systemd it
// asks systemd for that reload: systemdUnit below). So the rules of a hand-over hold
// unchanged: a pod stays in the daemon that has it, a `shim delete` reaches it, the crash
// sweep leaves a live daemon's work alone.
//
// Bounded: at most MAX_DAEMONS live daemons per socket directory. Each costs its own base
// memory (engine, JS heaps, compile cache mappings) and a run-pool thread per core, and a
// pod's start and a `shim delete` ask each other live daemon in turn; the last one, unable to
// start another, goes on making sandboxes until the kernel refuses it an fd (a create that
// fails cleanly, EMFILE).

import { readdirSync } from "node:fs";
import type { Logger } from "../task/task-host.ts";

/** The most live daemons of one socket directory that overflow starts (a reload still may start one more). */
export const MAX_DAEMONS = 16;
/** By default a daemon hands over once it holds this share of its open-file limit. */
export const DEFAULT_BUDGET_SHARE = 0.9;
/** After a successor exited without taking over, how long until another is tried. */
const RETRY_MS = 10_000;
/** How long a new pod waits for a successor that is starting (as long as a successor waits for a hand-over). */
const WAIT_MS = 10_000;

/**
 * The default budget for a soft limit of `soft` open files: what is left above it is room for
 * the containers still added to the pods this daemon has, for execs and for the fds a start
 * holds for a moment. Undefined (never overflow) when the limit is unlimited.
 */
export function defaultFdBudget(soft: bigint | undefined, infinity: bigint): number | undefined {
  if (soft === undefined || soft === infinity) return undefined;
  return Math.floor(Number(soft) * DEFAULT_BUDGET_SHARE);
}

export interface OverflowOptions {
  /** Open files at which new pods go to a successor. */
  budget: number;
  /** An fd count, up to about a container's worth: how many the daemon holds now. */
  countFds?: () => number;
  /** Live daemons of the socket directory, this one included. */
  liveDaemons: () => number;
  /**
   * Starts the successor (a daemon with --take-over); resolves when it has exited (it drained
   * in turn, or failed before it took over).
   */
  startSuccessor: () => { pid: number; exited: Promise<number>; what?: string };
  /** Whether a successor has asked this daemon to hand over already (then nothing is started). */
  handedOver: () => boolean;
  log: Logger;
  /** Most open files one container costs (./nofile.ts): how far apart two counts may be. */
  fdsPerContainer: number;
}

/**
 * The systemd service this process runs as, if any: the last component of its cgroup path
 * (the unified hierarchy's line, else the name=systemd one) when it names a .service and
 * systemd started it (INVOCATION_ID is set). Under systemd a successor is started by
 * `systemctl reload` of the unit: its ExecReload is the same --take-over, and systemd then
 * reads the pid file, so the successor becomes the unit's main process (a successor started
 * by the daemon itself would leave the unit's main process to exit once drained, and systemd
 * to restart it).
 */
export function systemdUnit(cgroup: string, env: Record<string, string | undefined>): string | undefined {
  if (!env.INVOCATION_ID) return undefined;
  const lines = cgroup.split("\n");
  for (const line of [lines.find((l) => l.startsWith("0::")), lines.find((l) => l.includes(":name=systemd:"))]) {
    const last = line?.slice(line.lastIndexOf("/") + 1).trim();
    if (last && /^[A-Za-z0-9:_.\\@-]+\.service$/.test(last)) return last;
  }
  return undefined;
}

/** Counts this process's open fds. */
export function countOwnFds(): number {
  return readdirSync("/proc/self/fd").length;
}

/**
 * Told before each new sandbox is made here. Counts the daemon's fds, seldom while far below
 * the budget (a count reads a directory of as many entries), at every new sandbox near it; at
 * the budget it starts one successor, and the new pods wait for it to take over (then the
 * manager forwards them) rather than fill this daemon while it starts: a start takes a second
 * or more under load, at 30 pods a second. Should it fail, or not take over within
 * WAIT_MS, they are made here (the budget leaves room above it).
 */
export class Overflow {
  /** New sandboxes to let pass before the next count. */
  private skip = 0;
  private successor: number | undefined;
  private refusedLogged = false;
  /** After a successor that failed: no other before this time (one that fails at once must not be started at every pod). */
  private retryAt = 0;
  /** Resolves once the successor took over or exited: the new pods that wait for it. */
  private waiting: { promise: Promise<void>; resolve: () => void } | undefined;

  constructor(private readonly o: OverflowOptions) {}

  /** The successor started and not yet exited, if any. */
  get starting(): number | undefined {
    return this.successor;
  }

  /** Before a new sandbox: undefined, make it here; a promise, wait, then ask handedOver() again. */
  beforeNewSandbox(): Promise<void> | undefined {
    if (this.o.handedOver()) return undefined;
    if (this.waiting) return this.waiting.promise;
    if (this.successor !== undefined || Date.now() < this.retryAt) return undefined;
    if (this.skip > 0) {
      this.skip--;
      return undefined;
    }
    const fds = (this.o.countFds ?? countOwnFds)();
    if (fds < this.o.budget) {
      // A sandbox's first container costs at most fdsPerContainer; its pod may add more: a
      // quarter of the distance in containers before the next count.
      this.skip = Math.floor((this.o.budget - fds) / this.o.fdsPerContainer / 4);
      return undefined;
    }
    const live = this.o.liveDaemons();
    if (live >= MAX_DAEMONS) {
      if (!this.refusedLogged)
        this.o.log(
          `${fds} open files, at the budget of ${this.o.budget}, but ${live} daemons serve this directory (at most ${MAX_DAEMONS}): new pods stay here until the open-file limit refuses them`,
          "warning",
        );
      this.refusedLogged = true;
      // Looked at again later, not at every new pod: a full daemon's fd list is long.
      this.retryAt = Date.now() + RETRY_MS;
      return undefined;
    }
    let started: { pid: number; exited: Promise<number>; what?: string };
    try {
      started = this.o.startSuccessor();
    } catch (e) {
      this.o.log(`starting a successor daemon: ${e instanceof Error ? e.message : String(e)}`, "warning");
      this.retryAt = Date.now() + RETRY_MS;
      return undefined;
    }
    this.successor = started.pid;
    this.o.log(`${fds} open files, at the budget of ${this.o.budget}: ${started.what ?? `daemon ${started.pid}`} takes the new pods`);
    const w = Promise.withResolvers<void>();
    this.waiting = w;
    const timer = setTimeout(() => this.stopWaiting(), WAIT_MS);
    void w.promise.then(() => clearTimeout(timer));
    void started.exited.then((code) => {
      if (this.successor !== started.pid) return;
      this.successor = undefined;
      this.stopWaiting();
      if (this.o.handedOver()) return;
      this.retryAt = Date.now() + RETRY_MS;
      this.o.log(`${started.what ?? `successor daemon ${started.pid}`} exited (${code}) before it took over`, "warning");
    });
    return w.promise;
  }

  /** The successor asked this daemon to hand over (or will not): the waiting pods go on. */
  stopWaiting(): void {
    this.waiting?.resolve();
    this.waiting = undefined;
  }
}
