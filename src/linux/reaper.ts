// Exit monitoring for the shim server (docs/ARCHITECTURE.md, "Exits").
//
// The server runs `runc create`; runc's init process is orphaned when `runc create` exits and,
// because the server is a child subreaper, is reparented to us. It is not a process Bun spawned,
// so Bun neither waits for it nor tells us when it exits. ExitWatcher does:
//
//   watch(pid) ─ pidfd_open(pid) ─▶ watched set; SIGCHLD (a child of ours exited) ─▶ main
//   thread: poll(2) every watched pidfd with timeout 0 ─▶ for each readable one,
//   waitid(P_PIDFD, fd, WEXITED|WNOHANG) reaps it and reads the status ─▶ promise resolves.
//
// We never call wait on "any child" (-1 / P_ALL): only on a pidfd we opened or, in
// reapOrphans, on one pid that is a zombie, is our child, and is neither watched, nor claimed
// by the caller's predicate, nor referenced by any pidfd this process holds (Bun holds a pidfd
// for every child it spawned until it has reaped it). So the `exited` promise of a Bun.spawn
// child is never stolen.
//
// Status convention (like a shell): the exit code, or 128+signal when killed by a signal.
// When the watched pid is not our child (waitid fails with ECHILD: e.g. `runc create` is still
// its parent), we cannot reap it; the status is then read from /proc/<pid>/stat field 52
// (exit_code, the raw wait status, readable as root while the process is a zombie) and checked
// with pidfd_send_signal(fd, 0) that the /proc entry was still that process; failing that the
// status is 255 (`source: "unknown"`). watch() of a Bun.spawn child (one this process already
// holds a pidfd for, or one `isOurs` claims) reads the status with WNOWAIT and leaves the reaping
// to Bun; if Bun reaps first the status is 255: use the Subprocess's `exited` for those. A pid that is already gone when watch() is called gets
// its status from the recently-reaped cache if reapOrphans reaped it (60 s), else 255.

import { ptr } from "bun:ffi";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { readdir, readFile, readlink } from "node:fs/promises";
import { STATUS_UNKNOWN } from "../common/constants.ts";
import {
  decodeSiginfo,
  ECHILD,
  EINTR,
  ESRCH,
  close as libcClose,
  P_ALL,
  P_PID,
  P_PIDFD,
  POLLFD_SIZE,
  POLLIN,
  PR_GET_CHILD_SUBREAPER,
  PR_SET_CHILD_SUBREAPER,
  pidfdOpen,
  pidfdSendSignal,
  poll,
  prctl,
  SIGINFO_SIZE,
  shellStatus,
  shellStatusFromWaitStatus,
  WEXITED,
  WNOHANG,
  WNOWAIT,
  waitid,
} from "./libc.ts";

export class ReaperError extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(`${message}: errno ${errno}`);
    this.name = "ReaperError";
  }
}

/** Makes this process a child subreaper: orphaned descendants are reparented to it. */
export function becomeSubreaper(): void {
  const [r, e] = prctl(PR_SET_CHILD_SUBREAPER, 1);
  if (r < 0) throw new ReaperError("prctl(PR_SET_CHILD_SUBREAPER)", e);
}

export function isSubreaper(): boolean {
  const out = new Int32Array(1);
  const [r] = prctl(PR_GET_CHILD_SUBREAPER, ptr(out));
  return r === 0 && out[0] === 1;
}

export interface ExitStatus {
  pid: number;
  /** Exit code, or 128+signal when killed by a signal; 255 when unknown. */
  status: number;
  exitedAt: Date;
  /** How the status was learnt: our waitid, /proc of a non-child zombie, the reaped-orphan cache, or not at all. */
  source: "waitid" | "proc" | "reaped" | "unknown";
}

export interface ReapedOrphan {
  pid: number;
  status: number;
  exitedAt: Date;
}

// ---------------------------------------------------------------------------------------------
// Children and orphans

/** Our children (all threads' children files; a /proc scan where those are missing). */
export function listChildren(): number[] {
  const out = new Set<number>();
  let viaTask = false;
  try {
    for (const t of readdirSync("/proc/self/task")) {
      let s: string;
      try {
        s = readFileSync(`/proc/self/task/${t}/children`, "utf8");
      } catch {
        continue; // the thread ended, or the kernel lacks the file: the /proc scan below covers it
      }
      viaTask = true;
      for (const w of s.split(" ")) if (w.trim()) out.add(Number(w));
    }
  } catch {} // no /proc/self/task: the /proc scan below
  if (viaTask) return [...out];
  const me = process.pid;
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    const st = readStat(Number(d));
    if (st && st.ppid === me) out.add(Number(d));
  }
  return [...out];
}

interface Stat {
  state: string;
  ppid: number;
  /** Field 52: the raw wait status of an exited process (0 while running). */
  exitCode: number | undefined;
}

function readStat(pid: number): Stat | undefined {
  let s: string;
  try {
    s = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined; // gone (reaped by its parent): nothing to read
  }
  const rest = s
    .slice(s.lastIndexOf(")") + 2)
    .trim()
    .split(" ");
  // rest[0] is field 3 (state); field n is rest[n - 3].
  const ec = rest[49];
  return { state: rest[0] ?? "", ppid: Number(rest[1]), exitCode: ec === undefined ? undefined : Number(ec) };
}

/** Pids referenced by the pidfds this process holds (Bun's own spawned children, our watches). */
export function pidfdHeldPids(except = -1): Set<number> {
  const out = new Set<number>();
  let fds: string[];
  try {
    fds = readdirSync("/proc/self/fd");
  } catch {
    return out;
  }
  for (const fd of fds) {
    if (Number(fd) === except) continue;
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) !== "anon_inode:[pidfd]") continue;
      const m = /^Pid:\s*(-?\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
      if (m && Number(m[1]) > 0) out.add(Number(m[1]));
    } catch {} // closed while we looked (readdir's own fd, a finished spawn): not held
  }
  return out;
}

/** pidfdHeldPids, read with asynchronous I/O, leaving out our own pidfd `except`. */
export async function pidfdHeldPidsAsync(except = -1): Promise<Set<number>> {
  const out = new Set<number>();
  let fds: string[];
  try {
    fds = await readdir("/proc/self/fd");
  } catch {
    return out; // no /proc: nothing is known to be held, as with the synchronous scan
  }
  await Promise.all(
    fds.map(async (fd) => {
      if (Number(fd) === except) return;
      try {
        if ((await readlink(`/proc/self/fd/${fd}`)) !== "anon_inode:[pidfd]") return;
        const m = /^Pid:\s*(-?\d+)/m.exec(await readFile(`/proc/self/fdinfo/${fd}`, "utf8"));
        if (m && Number(m[1]) > 0) out.add(Number(m[1]));
      } catch {} // closed while we looked (readdir's own fd, a finished spawn): not held
    }),
  );
  return out;
}

const REAPED_TTL_MS = 60_000;
const recentlyReaped = new Map<number, ReapedOrphan & { at: number }>();

function rememberReaped(o: ReapedOrphan): void {
  const now = Date.now();
  for (const [pid, r] of recentlyReaped) if (now - r.at > REAPED_TTL_MS) recentlyReaped.delete(pid);
  recentlyReaped.set(o.pid, { ...o, at: now });
}

/** Status of a pid that reapOrphans reaped in the last minute (consumed on read). */
export function takeReaped(pid: number): ReapedOrphan | undefined {
  const r = recentlyReaped.get(pid);
  if (!r) return undefined;
  recentlyReaped.delete(pid);
  if (Date.now() - r.at > REAPED_TTL_MS) return undefined;
  return { pid: r.pid, status: r.status, exitedAt: r.exitedAt };
}

const orphanInfo = new Uint8Array(SIGINFO_SIZE);

/** Whether some child of ours is a zombie: waitid(P_ALL) with WNOWAIT looks and reaps nothing. */
function anyZombieChild(): boolean {
  const [r, e] = waitid(P_ALL, 0, orphanInfo, WEXITED | WNOHANG | WNOWAIT);
  if (r < 0) return e !== ECHILD; // ECHILD: no children at all; any other failure: look anyway
  return decodeSiginfo(orphanInfo).pid !== 0;
}

/**
 * Reaps our zombie children that nobody else will wait for: children in state Z for which
 * `isOurs(pid)` is false and to which this process holds no pidfd (Bun holds one for each
 * child it spawned until it reaps it; ExitWatcher holds one per watched pid). Each is reaped
 * with waitid(P_PID, pid, WEXITED|WNOHANG), never a wait on any child. Returns what it reaped;
 * statuses are kept for a minute for a late watch(pid).
 */
export function reapOrphans(isOurs: (pid: number) => boolean = () => false): ReapedOrphan[] {
  // The sweep runs every few seconds for the server's whole life: one syscall when no child
  // is a zombie, instead of reading /proc (whose strings an idle server then keeps until its
  // next collection).
  if (!anyZombieChild()) return [];
  const me = process.pid;
  const zombies = listChildren().filter((pid) => {
    const st = readStat(pid);
    return st !== undefined && st.state === "Z" && st.ppid === me && !isOurs(pid);
  });
  if (!zombies.length) return [];
  const held = pidfdHeldPids();
  const out: ReapedOrphan[] = [];
  for (const pid of zombies) {
    if (held.has(pid)) continue;
    const [r] = waitid(P_PID, pid, orphanInfo, WEXITED | WNOHANG);
    if (r < 0) continue;
    const ci = decodeSiginfo(orphanInfo);
    if (ci.pid !== pid) continue;
    const o = { pid, status: shellStatus(ci), exitedAt: new Date() };
    rememberReaped(o);
    out.push(o);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// ExitWatcher

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
   * Read /proc synchronously in watch(). For a process with a short fd table (a shim server
   * serving one pod): asynchronous reads would start Bun's thread pool, whose two threads
   * keep their heaps for the process's life. Default false (the daemon's table is long).
   */
  readProcSync?: boolean;
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
  private pollBuf = new Uint8Array(POLLFD_SIZE * 16);
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
    // collect its status with WNOWAIT so Bun's `exited` still gets it. /proc is read with
    // asynchronous I/O unless readProcSync: watch() runs on every Create, and the fd table of
    // a process serving many pods is long.
    const sync = this.opts.readProcSync === true;
    const foreign = (this.opts.isOurs?.(pid) ?? false) || (sync ? pidfdHeldPids(fd) : await pidfdHeldPidsAsync(fd)).has(pid);
    const elsewhere = (sync ? parentOfSync(pid) : await parentOf(pid)) !== process.pid;
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
    const size = list.length * POLLFD_SIZE;
    if (this.pollBuf.byteLength < size) this.pollBuf = new Uint8Array(size * 2);
    const buf = this.pollBuf;
    const view = new DataView(buf.buffer, buf.byteOffset, size);
    buf.fill(0, 0, size);
    list.forEach((e, i) => {
      view.setInt32(i * POLLFD_SIZE, e.fd, true);
      view.setInt16(i * POLLFD_SIZE + 4, POLLIN, true);
    });
    const [r] = poll(buf, list.length, 0);
    if (r <= 0) return; // none exited (or EINTR: the next SIGCHLD or poll tick retries)
    let collected = false;
    list.forEach((e, i) => {
      // POLLIN: exited. POLLNVAL/POLLERR/POLLHUP should not happen (the fd is ours until
      // collected); collecting reports what waitid can tell rather than spin.
      if (view.getInt16(i * POLLFD_SIZE + 6, true) === 0) return;
      if ("onReady" in e) e.onReady();
      else if (this.collect(e)) collected = true;
    });
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

/** The parent pid of a process, read asynchronously from /proc (0 when it is gone). */
async function parentOf(pid: number): Promise<number> {
  try {
    return ppidOf(await readFile(`/proc/${pid}/status`, "utf8"));
  } catch {
    return 0; // gone: already reaped by someone else; the poll reports it
  }
}

/** parentOf, read synchronously. */
function parentOfSync(pid: number): number {
  try {
    return ppidOf(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return 0;
  }
}

function ppidOf(status: string): number {
  return Number(/^PPid:\s+(\d+)/m.exec(status)?.[1] ?? 0);
}
