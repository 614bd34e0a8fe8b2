// Exit monitoring for the shim server and the daemon (docs/ARCHITECTURE.md, "Exits").
//
// The server runs `runc create`; runc's init process is orphaned when `runc create` exits and,
// because the server is a child subreaper, is reparented to us. It is not a process Bun spawned,
// so Bun neither waits for it nor tells us when it exits. ExitWatcher does:
//
//   watch(pid) ─ pidfd_open(pid) ─▶ watched set; SIGCHLD (a child of ours exited) ─▶ main
//   thread: poll(2) every watched pidfd with timeout 0 ─▶ for each readable one,
//   waitid(P_PIDFD, fd, WEXITED|WNOHANG) reaps it and reads the status ─▶ promise resolves.
//
// We never call wait on "any child" (-1 / P_ALL): only on a pidfd we opened or, in the orphan
// sweep (./orphans.ts), on one pid that is a zombie, is our child, and is neither watched, nor
// claimed by the caller's predicate, nor referenced by any pidfd this process holds (Bun holds a
// pidfd for every child it spawned until it has reaped it). So the `exited` promise of a
// Bun.spawn child is never stolen.
//
// Status convention (like a shell): the exit code, or 128+signal when killed by a signal.
// When the watched pid is not our child (waitid fails with ECHILD: e.g. `runc create` is still
// its parent), we cannot reap it; the status is then read from /proc/<pid>/stat field 52
// (exit_code, the raw wait status, readable as root while the process is a zombie) and checked
// with pidfd_send_signal(fd, 0) that the /proc entry was still that process; failing that the
// status is 255 (`source: "unknown"`). watch() of a Bun.spawn child (one this process already
// holds a pidfd for, or one `isOurs` claims) reads the status with WNOWAIT and leaves the reaping
// to Bun; if Bun reaps first the status is 255: use the Subprocess's `exited` for those. A pid
// that is already gone when watch() is called gets its status from the recently-reaped cache if
// the sweep reaped it (60 s), else 255.

import { STATUS_UNKNOWN } from "../common/constants.ts";
import { FdPoll } from "./fd-poll.ts";
import {
  decodeSiginfo,
  ECHILD,
  EINTR,
  ESRCH,
  close as libcClose,
  P_PIDFD,
  pidfdOpen,
  pidfdSendSignal,
  SIGINFO_SIZE,
  shellStatus,
  shellStatusFromWaitStatus,
  WEXITED,
  WNOHANG,
  WNOWAIT,
  waitid,
} from "./libc.ts";
import { type ReapedOrphan, reapOrphans, takeReaped } from "./orphans.ts";
import { readStat, syncWatchReads, type WatchReads } from "./proc.ts";
import { ReaperError } from "./subreaper.ts";

export interface ExitStatus {
  pid: number;
  /** Exit code, or 128+signal when killed by a signal; 255 when unknown. */
  status: number;
  exitedAt: Date;
  /** How the status was learnt: our waitid, /proc of a non-child zombie, the reaped-orphan cache, or not at all. */
  source: "waitid" | "proc" | "reaped" | "unknown";
}

export interface ExitWatcherOptions {
  /** Pids the caller waits for itself (Bun.spawn children): never reaped by the orphan sweep. */
  isOurs?: (pid: number) => boolean;
  /** Orphan sweep period; 0 disables the timer (sweeps still follow every seen exit). Default 2000. */
  reapIntervalMs?: number;
  /**
   * How often the pidfds are polled while a watched pid has a parent other than us, whose exit
   * sends no SIGCHLD here. Default 100.
   */
  pollTimeoutMs?: number;
  /** Most pids watched at once. Default 4096. */
  capacity?: number;
  /** Told when an orphan sweep failed (it is retried on the next one). */
  onSweepError?: (e: unknown) => void;
  /**
   * How watch() reads /proc: synchronously (the default: a shim server, whose fd table is
   * short, and which must not start Bun's thread pool), or ./proc-async.ts's asyncWatchReads
   * (the daemon, whose table is long).
   */
  reads?: WatchReads;
  /** Called for each orphan the sweep reaped. */
  onOrphanReaped?: (o: ReapedOrphan) => void;
}

/** An fd polled for readability beside the pidfds (watchReadable). */
interface Readable {
  fd: number;
  onReady: () => void;
}

interface Entry {
  pid: number;
  fd: number;
  /** Someone else in this process (Bun) holds a pidfd to it or the caller claims it: read the status, never reap. */
  foreign: boolean;
  /** Its parent was not this process when watched: its exit may send us no SIGCHLD. */
  elsewhere: boolean;
  promise: Promise<ExitStatus>;
  resolve: (s: ExitStatus) => void;
  reject: (e: Error) => void;
}

/**
 * While anything is watched, this long-period poll keeps the process alive (a signal listener
 * does not) and is the safety net should a SIGCHLD ever be coalesced away before we listened.
 */
const SAFETY_POLL_MS = 1000;

/**
 * One per process. Tells when watched pids exit, with their status; sweeps orphan zombies.
 *
 * No thread of its own (a Bun Worker is a whole JS VM, about 2 MiB of a server that idles
 * with its containers): a watched init is our child (runc exited, we are the subreaper), so
 * its exit sends us SIGCHLD. On each SIGCHLD the main thread polls every watched pidfd with
 * a zero timeout and collects the readable ones with waitid(P_PIDFD). SIGCHLDs coalesce,
 * hence "poll every pidfd", never "one signal, one exit". A pid whose parent is someone else
 * is polled on a timer until it exits or becomes ours.
 */
export class ExitWatcher {
  private readonly byPid = new Map<number, Entry>();
  /** Watches whose pidfd is open but not yet registered. */
  private readonly opening = new Map<number, { promise: Promise<ExitStatus> }>();
  private readonly capacity: number;
  private timer: ReturnType<typeof setInterval> | undefined;
  private poller: ReturnType<typeof setInterval> | undefined;
  private pollerMs = 0;
  private listening = false;
  private sweepQueued = false;
  private closed = false;
  private readonly info = new Uint8Array(SIGINFO_SIZE);
  private readonly fdPoll = new FdPoll();
  private readonly onSigchld = () => this.pollNow();
  /** Other fds polled for readability with the pidfds (watchReadable): OOM eventfds, inotify fds. */
  private readonly readable = new Set<Readable>();

  constructor(private readonly opts: ExitWatcherOptions = {}) {
    this.capacity = opts.capacity ?? 4096;
    const every = opts.reapIntervalMs ?? 2000;
    if (every > 0) {
      this.timer = setInterval(() => this.sweep(), every);
      this.timer.unref();
    }
  }

  /** Number of pids being watched. */
  get size(): number {
    return this.byPid.size;
  }

  isWatched(pid: number): boolean {
    return this.byPid.has(pid);
  }

  /** Resolves when pid exits (at once if it already has and is still a zombie). */
  watch(pid: number): Promise<ExitStatus> {
    if (this.closed) return Promise.reject(new Error("ExitWatcher closed"));
    if (!Number.isInteger(pid) || pid <= 0) return Promise.reject(new RangeError(`bad pid ${pid}`));
    const known = this.byPid.get(pid) ?? this.opening.get(pid);
    if (known) return known.promise;
    // Listening before the pidfd exists: a SIGCHLD from here on is never missed.
    this.listen();
    // The pidfd first: from now on the orphan sweep leaves the pid alone (it skips pids this
    // process holds a pidfd for), whatever happens while we look at /proc below.
    const [fd, e] = pidfdOpen(pid);
    if (fd < 0) {
      this.settle();
      if (e === ESRCH) {
        const r = takeReaped(pid);
        return Promise.resolve(r ? { ...r, source: "reaped" } : { pid, status: STATUS_UNKNOWN, exitedAt: new Date(), source: "unknown" });
      }
      return Promise.reject(new ReaperError(`pidfd_open(${pid})`, e));
    }
    const promise = this.register(pid, fd);
    const opening = { promise };
    this.opening.set(pid, opening);
    const done = () => {
      if (this.opening.get(pid) === opening) this.opening.delete(pid);
      this.settle();
    };
    promise.then(done, done);
    return promise;
  }

  private async register(pid: number, fd: number): Promise<ExitStatus> {
    // A pid this process holds another pidfd for is a Bun.spawn child (Bun waits for it):
    // collect its status with WNOWAIT so Bun's `exited` still gets it. watch() runs on every
    // Create: the daemon, whose fd table is long, reads /proc asynchronously (opts.reads).
    const reads = this.opts.reads ?? syncWatchReads;
    const foreign = (this.opts.isOurs?.(pid) ?? false) || (await reads.pidfdHeldPids(fd)).has(pid);
    const elsewhere = (await reads.parentOf(pid)) !== process.pid;
    if (this.closed) {
      libcClose(fd);
      throw new Error("ExitWatcher closed");
    }
    if (this.byPid.size + this.readable.size >= this.capacity) {
      libcClose(fd);
      throw new Error(`ExitWatcher: more than ${this.capacity} pids watched`);
    }
    let resolve!: (s: ExitStatus) => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<ExitStatus>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.byPid.set(pid, { pid, fd, foreign, elsewhere, promise, resolve, reject });
    this.settle();
    // It may have exited (and its SIGCHLD come and gone) before it was in the set.
    this.pollNow();
    return promise;
  }

  /**
   * Calls `onReady` each time `fd` is readable (an OOM eventfd or an inotify fd), polled with
   * the pidfds: on every SIGCHLD and at least every pollTimeoutMs while any is watched, since
   * what makes it readable sends us no signal. `onReady` must consume what made it readable
   * (read the fd). Returns the stop; the fd stays the caller's to close.
   */
  watchReadable(fd: number, onReady: () => void): () => void {
    if (this.closed) throw new Error("ExitWatcher closed");
    if (this.byPid.size + this.readable.size >= this.capacity) throw new Error(`ExitWatcher: more than ${this.capacity} fds watched`);
    const r: Readable = { fd, onReady };
    this.readable.add(r);
    this.settle();
    return () => {
      if (this.readable.delete(r)) this.settle();
    };
  }

  /** One orphan sweep now (also runs on the timer and after every exit seen). */
  reapOrphans(): ReapedOrphan[] {
    const isOurs = this.opts.isOurs;
    const reaped = reapOrphans((pid) => this.byPid.has(pid) || (isOurs?.(pid) ?? false));
    if (this.opts.onOrphanReaped) for (const o of reaped) this.opts.onOrphanReaped(o);
    return reaped;
  }

  /** Stops the timers and the SIGCHLD listener, closes every pidfd; pending watches reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    for (const e of this.byPid.values()) {
      libcClose(e.fd);
      e.reject(new Error("ExitWatcher closed"));
    }
    this.byPid.clear();
    this.readable.clear();
    this.settle();
  }

  private listen(): void {
    if (this.listening || this.closed) return;
    this.listening = true;
    process.on("SIGCHLD", this.onSigchld);
  }

  /**
   * After the set changed: the SIGCHLD listener and the polls exist exactly while something
   * is watched (or being registered), and the fast poll only for pids whose parent is not us.
   */
  private settle(): void {
    const busy = !this.closed && (this.byPid.size > 0 || this.opening.size > 0);
    if (!busy && this.listening) {
      process.off("SIGCHLD", this.onSigchld);
      this.listening = false;
    }
    let want = 0;
    // Readable fds (OOM notifications) at the safety period: an idle server must not wake
    // often, and a container's OOM count is read again at its exit anyway.
    if (!this.closed && this.readable.size > 0) want = SAFETY_POLL_MS;
    if (busy && this.byPid.size > 0) {
      want = SAFETY_POLL_MS;
      for (const e of this.byPid.values()) {
        if (e.elsewhere) {
          want = this.opts.pollTimeoutMs ?? 100;
          break;
        }
      }
    }
    if (want === this.pollerMs) return;
    if (this.poller) clearInterval(this.poller);
    this.poller = undefined;
    this.pollerMs = want;
    if (want > 0) this.poller = setInterval(() => this.pollNow(), want);
  }

  /** poll(2) every watched pidfd without waiting; collect the exited ones. */
  private pollNow(): void {
    if (this.closed || this.byPid.size + this.readable.size === 0) return;
    const list: (Entry | Readable)[] = [...this.byPid.values(), ...this.readable];
    let collected = false;
    // Readable: exited. POLLNVAL/POLLERR/POLLHUP should not happen (the fd is ours until
    // collected); collecting reports what waitid can tell rather than spin.
    for (const i of this.fdPoll.ready(list.map((e) => e.fd))) {
      const e = list[i] as Entry | Readable;
      if ("onReady" in e) e.onReady();
      else if (this.collect(e)) collected = true;
    }
    if (collected) {
      this.settle();
      this.queueSweep();
    }
  }

  /** Reads (or reaps) an exited pid's status and settles its watch; false if not yet waitable. */
  private collect(e: Entry): boolean {
    const opts = WEXITED | WNOHANG | (e.foreign ? WNOWAIT : 0);
    let [r, err] = waitid(P_PIDFD, e.fd, this.info, opts);
    while (r < 0 && err === EINTR) [r, err] = waitid(P_PIDFD, e.fd, this.info, opts);
    let result: ExitStatus;
    if (r === 0) {
      const ci = decodeSiginfo(this.info);
      // Readable but not waitable yet (should not happen): the next poll looks again.
      if (ci.pid === 0) return false;
      result = { pid: e.pid, status: shellStatus(ci), exitedAt: new Date(), source: "waitid" };
    } else if (err === ECHILD) {
      // Not our child (its parent is alive and will reap it): read the zombie's status.
      const st = readStat(e.pid);
      const [alive] = pidfdSendSignal(e.fd, 0);
      if (st && st.state === "Z" && st.exitCode !== undefined && alive === 0) {
        result = { pid: e.pid, status: shellStatusFromWaitStatus(st.exitCode), exitedAt: new Date(), source: "proc" };
      } else {
        const late = takeReaped(e.pid);
        result = late ? { ...late, source: "reaped" } : { pid: e.pid, status: STATUS_UNKNOWN, exitedAt: new Date(), source: "unknown" };
      }
    } else {
      result = { pid: e.pid, status: STATUS_UNKNOWN, exitedAt: new Date(), source: "unknown" };
    }
    libcClose(e.fd);
    this.byPid.delete(e.pid);
    e.resolve(result);
    return true;
  }

  private queueSweep(): void {
    if (this.sweepQueued) return;
    this.sweepQueued = true;
    setImmediate(() => {
      this.sweepQueued = false;
      this.sweep();
    });
  }

  private sweep(): void {
    if (this.closed) return;
    try {
      this.reapOrphans();
    } catch (e) {
      // /proc hiccups must not kill the server; the next sweep retries. Said, not swallowed.
      this.opts.onSweepError?.(e);
    }
  }
}
