// Exit monitoring for the shim server (docs/ARCHITECTURE.md, "Exits").
//
// The server runs `runc create`; runc's init process is orphaned when `runc create` exits and,
// because the server is a child subreaper, is reparented to us. It is not a process Bun spawned,
// so Bun neither waits for it nor tells us when it exits. ExitWatcher does:
//
//   watch(pid) ─ pidfd_open(pid) ─▶ shared fd set ─▶ poll thread (reaper-worker.ts) blocks in
//   poll(2) over all pidfds + a wake eventfd ─▶ "id ready" message ─▶ main thread:
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
import { workerScript } from "../common/compiled.ts";
import { STATUS_UNKNOWN } from "../common/constants.ts";
import {
  decodeSiginfo,
  ECHILD,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EINTR,
  ESRCH,
  eventfd,
  eventfdSignal,
  close as libcClose,
  P_PID,
  P_PIDFD,
  PR_GET_CHILD_SUBREAPER,
  PR_SET_CHILD_SUBREAPER,
  pidfdOpen,
  pidfdSendSignal,
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
export function pidfdHeldPids(): Set<number> {
  const out = new Set<number>();
  let fds: string[];
  try {
    fds = readdirSync("/proc/self/fd");
  } catch {
    return out;
  }
  for (const fd of fds) {
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

/**
 * Reaps our zombie children that nobody else will wait for: children in state Z for which
 * `isOurs(pid)` is false and to which this process holds no pidfd (Bun holds one for each
 * child it spawned until it reaps it; ExitWatcher holds one per watched pid). Each is reaped
 * with waitid(P_PID, pid, WEXITED|WNOHANG), never a wait on any child. Returns what it reaped;
 * statuses are kept for a minute for a late watch(pid).
 */
export function reapOrphans(isOurs: (pid: number) => boolean = () => false): ReapedOrphan[] {
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

// Shared control block with the poll thread (see reaper-worker.ts).
const CTL_SEQ = 0;
const CTL_STOP = 1;
const CTL_COUNT = 2;
const CTL_EVENTFD = 3;
const CTL_HEADER = 4;

export interface ExitWatcherOptions {
  /** Pids the caller waits for itself (Bun.spawn children): never reaped by the orphan sweep. */
  isOurs?: (pid: number) => boolean;
  /** Orphan sweep period; 0 disables the timer (sweeps still follow every seen exit). Default 2000. */
  reapIntervalMs?: number;
  /** poll(2) timeout of the watcher thread while something is watched (a safety net). Default 100. */
  pollTimeoutMs?: number;
  /** Most pids watched at once. Default 4096. */
  capacity?: number;
  /** Told when an orphan sweep failed (it is retried on the next one). */
  onSweepError?: (e: unknown) => void;
  /** Called for each orphan the sweep reaped. */
  onOrphanReaped?: (o: ReapedOrphan) => void;
}

interface Readable {
  id: number;
  fd: number;
  onReady: () => void;
}

interface Entry {
  id: number;
  pid: number;
  fd: number;
  /** Someone else in this process (Bun) holds a pidfd to it or the caller claims it: read the status, never reap. */
  foreign: boolean;
  promise: Promise<ExitStatus>;
  resolve: (s: ExitStatus) => void;
  reject: (e: Error) => void;
}

export function reaperWorkerEntry(): string {
  return workerScript("linux/reaper-worker", process.env.BUNWASI_REAPER_WORKER);
}

/** One per process. Tells when watched pids exit, with their status; sweeps orphan zombies. */
export class ExitWatcher {
  private readonly entries = new Map<number, Entry>(); // by id
  private readonly byPid = new Map<number, Entry>();
  /** Watches whose pidfd is open but not yet handed to the poll thread. */
  private readonly opening = new Map<number, { promise: Promise<ExitStatus> }>();
  private nextId = 1;
  private readonly capacity: number;
  private readonly ctlBuf: SharedArrayBuffer;
  private readonly ctl: Int32Array;
  private efd = -1;
  private worker: Worker | undefined;
  private workerStopped: Promise<void> | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private sweepQueued = false;
  private closed = false;
  private readonly info = new Uint8Array(SIGINFO_SIZE);
  /** Other fds polled for readability on the same thread (watchReadable), by id. */
  private readonly readable = new Map<number, Readable>();

  constructor(private readonly opts: ExitWatcherOptions = {}) {
    this.capacity = opts.capacity ?? 4096;
    this.ctlBuf = new SharedArrayBuffer((CTL_HEADER + 2 * this.capacity) * 4);
    this.ctl = new Int32Array(this.ctlBuf);
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
    // The pidfd first: from now on the orphan sweep leaves the pid alone (it skips pids this
    // process holds a pidfd for), whatever happens while we look at /proc below.
    const [fd, e] = pidfdOpen(pid);
    if (fd < 0) {
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
    };
    promise.then(done, done);
    return promise;
  }

  private async register(pid: number, fd: number): Promise<ExitStatus> {
    // A pid this process holds another pidfd for is a Bun.spawn child (Bun waits for it):
    // collect its status with WNOWAIT so Bun's `exited` still gets it. /proc is read with
    // asynchronous I/O: watch() runs on every Create, and the fd table of a process serving
    // many pods is long.
    const foreign = (this.opts.isOurs?.(pid) ?? false) || (await pidfdHeldPidsAsync(fd)).has(pid);
    if (this.closed) {
      libcClose(fd);
      throw new Error("ExitWatcher closed");
    }
    // Exits and readable fds share the poll thread's table.
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
    const entry: Entry = { id: this.nextId++, pid, fd, foreign, promise, resolve, reject };
    this.entries.set(entry.id, entry);
    this.byPid.set(pid, entry);
    this.ensureWorker();
    this.publish();
    return promise;
  }

  /**
   * Calls `onReady` each time `fd` is readable, polled by the exits' thread (no thread of its
   * own): an OOM eventfd or an inotify fd. `onReady` must consume what made it readable (read
   * the fd) before it is polled again. Returns the stop; the fd stays the caller's to close.
   */
  watchReadable(fd: number, onReady: () => void): () => void {
    if (this.closed) throw new Error("ExitWatcher closed");
    if (this.byPid.size + this.readable.size >= this.capacity) throw new Error(`ExitWatcher: more than ${this.capacity} fds watched`);
    const r: Readable = { id: this.nextId++, fd, onReady };
    this.readable.set(r.id, r);
    this.ensureWorker();
    this.publish();
    return () => {
      if (this.readable.delete(r.id)) this.publish();
      r.id = -1;
    };
  }

  /** One orphan sweep now (also runs on the timer and after every exit seen). */
  reapOrphans(): ReapedOrphan[] {
    const isOurs = this.opts.isOurs;
    const reaped = reapOrphans((pid) => this.byPid.has(pid) || (isOurs?.(pid) ?? false));
    if (this.opts.onOrphanReaped) for (const o of reaped) this.opts.onOrphanReaped(o);
    return reaped;
  }

  /** Stops the thread and the timer, closes every pidfd; pending watches reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.worker) {
      Atomics.store(this.ctl, CTL_STOP, 1);
      eventfdSignal(this.efd);
      const stopped = this.workerStopped;
      const t = new Promise<void>((r) => setTimeout(r, 1000).unref());
      await Promise.race([stopped, t]);
      this.worker.terminate();
      this.worker = undefined;
    }
    if (this.efd >= 0) libcClose(this.efd);
    this.efd = -1;
    for (const e of this.entries.values()) {
      libcClose(e.fd);
      e.reject(new Error("ExitWatcher closed"));
    }
    this.entries.clear();
    this.byPid.clear();
    this.readable.clear();
  }

  /** Starts the poll thread ahead of the first watch; it idles (unref'd) until then. */
  prestart(): void {
    this.ensureWorker();
    if (this.entries.size === 0) this.worker?.unref();
  }

  private ensureWorker(): void {
    if (this.worker) {
      this.worker.ref();
      return;
    }
    const [efd, e] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) throw new ReaperError("eventfd", e);
    this.efd = efd;
    Atomics.store(this.ctl, CTL_EVENTFD, efd);
    const w = new Worker(reaperWorkerEntry());
    this.worker = w;
    this.workerStopped = new Promise<void>((resolve) => {
      w.addEventListener("close", () => resolve());
      w.addEventListener("message", (ev: MessageEvent) => {
        const d = ev.data as { ready?: number[]; stopped?: boolean; error?: string };
        if (d.ready) this.onReady(d.ready);
        if (d.stopped) resolve();
        if (d.error) {
          // The poll thread died: fail the watches rather than hang them.
          for (const en of this.entries.values()) en.reject(new Error(`reaper thread: ${d.error}`));
          resolve();
        }
      });
    });
    w.postMessage({ ctl: this.ctlBuf, timeoutMs: this.opts.pollTimeoutMs ?? 100 });
  }

  /** Writes the watched set into the shared block (seqlock) and wakes the poll thread. */
  private publish(): void {
    const c = this.ctl;
    Atomics.add(c, CTL_SEQ, 1); // odd: writing
    let i = 0;
    for (const e of [...this.entries.values(), ...this.readable.values()]) {
      Atomics.store(c, CTL_HEADER + 2 * i, e.fd);
      Atomics.store(c, CTL_HEADER + 2 * i + 1, e.id);
      i++;
    }
    Atomics.store(c, CTL_COUNT, i);
    Atomics.add(c, CTL_SEQ, 1); // even: done
    if (this.efd >= 0) eventfdSignal(this.efd);
    if (this.worker) {
      if (this.entries.size) this.worker.ref();
      else this.worker.unref();
    }
  }

  private onReady(ids: number[]): void {
    let changed = false;
    let rearmed = false;
    for (const id of ids) {
      const r = this.readable.get(id);
      if (r) {
        // The poll thread reports an id once: a new id has it polled again.
        this.readable.delete(id);
        r.id = this.nextId++;
        this.readable.set(r.id, r);
        rearmed = true;
        r.onReady();
        continue;
      }
      const e = this.entries.get(id);
      if (!e) continue; // stale report (already collected)
      changed = true;
      this.collect(e);
    }
    if (changed) {
      this.publish();
      this.queueSweep();
    } else if (rearmed) {
      this.publish();
    }
  }

  private collect(e: Entry): void {
    const opts = WEXITED | WNOHANG | (e.foreign ? WNOWAIT : 0);
    let [r, err] = waitid(P_PIDFD, e.fd, this.info, opts);
    while (r < 0 && err === EINTR) [r, err] = waitid(P_PIDFD, e.fd, this.info, opts);
    let result: ExitStatus | undefined;
    if (r === 0) {
      const ci = decodeSiginfo(this.info);
      if (ci.pid === 0) {
        // Readable but not waitable yet (should not happen): re-arm under a new id.
        this.entries.delete(e.id);
        e.id = this.nextId++;
        this.entries.set(e.id, e);
        return;
      }
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
    this.entries.delete(e.id);
    this.byPid.delete(e.pid);
    e.resolve(result);
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
