// What /proc says about processes, read synchronously: our children, a process's state,
// parent and exit status, and which pids this process holds pidfds to. Synchronous because a
// shim server reads them (an asynchronous read would start Bun's thread pool: see
// docs/ARCHITECTURE.md, "Bun's thread pool"); the daemon's asynchronous reads of the same
// are in ./proc-async.ts.

import { readdirSync, readFileSync, readlinkSync } from "node:fs";

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

export interface Stat {
  state: string;
  ppid: number;
  /** Field 52: the raw wait status of an exited process (0 while running). */
  exitCode: number | undefined;
}

/** /proc/<pid>/stat, or undefined when the process is gone. */
export function readStat(pid: number): Stat | undefined {
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

/** The pid a pidfd refers to, from its /proc/self/fdinfo text (undefined: no such line, or the process is gone). */
export function pidOfFdinfo(fdinfo: string): number | undefined {
  const m = /^Pid:\s*(-?\d+)/m.exec(fdinfo);
  return m && Number(m[1]) > 0 ? Number(m[1]) : undefined;
}

export const PIDFD_LINK = "anon_inode:[pidfd]";

/** Pids referenced by the pidfds this process holds (Bun's own spawned children, our watches), but `except`. */
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
      if (readlinkSync(`/proc/self/fd/${fd}`) !== PIDFD_LINK) continue;
      const pid = pidOfFdinfo(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
      if (pid !== undefined) out.add(pid);
    } catch {} // closed while we looked (readdir's own fd, a finished spawn): not held
  }
  return out;
}

/** The parent pid of a process (0 when it is gone). */
export function parentOf(pid: number): number {
  try {
    return ppidOf(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return 0; // gone: already reaped by someone else
  }
}

/** The PPid line of a /proc/<pid>/status text. */
export function ppidOf(status: string): number {
  return Number(/^PPid:\s+(\d+)/m.exec(status)?.[1] ?? 0);
}

/**
 * The reads ExitWatcher.watch() makes of each new pid: which pids this process holds
 * pidfds to, and the pid's parent. Either synchronous (here) or asynchronous (./proc-async.ts,
 * for a process whose fd table is long).
 */
export interface WatchReads {
  pidfdHeldPids(except: number): Set<number> | Promise<Set<number>>;
  parentOf(pid: number): number | Promise<number>;
}

/** The synchronous WatchReads: for a process with a short fd table (a shim server serving one pod). */
export const syncWatchReads: WatchReads = { pidfdHeldPids, parentOf };
