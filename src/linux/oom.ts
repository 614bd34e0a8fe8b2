// Whether the kernel's OOM killer ended a process of a container: the memory cgroup's own
// counter of OOM kills, read when the container's init has exited and before its
// /tasks/exit goes out, so containerd's CRI has the TaskOOM first and reports the
// container's reason as "OOMKilled" (it sets the reason from that event).
//
// The counter, by cgroup version:
//   v1  <memory mount>/<path>/memory.oom_control, line "oom_kill N" (Linux 4.13+)
//   v2  /sys/fs/cgroup/<path>/memory.events,      line "oom_kill N"
// The container's path comes from /proc/<init pid>/cgroup, read right after the runtime's
// create: it is where runc put the init, whatever driver (cgroupfs or systemd) named it, and
// it needs no parsing of the spec's cgroupsPath. A process in a fresh cgroup starts at 0,
// but the count at create is kept anyway and only an increase counts.
//
// The count is read when the init has exited (exact for what CRI shows: the reason of an
// exited container) and, as runc-v2 does, whenever the kernel notifies a change while the
// container runs (an OOM kill of a process other than the init): an fd per container, polled
// with the exit watcher's pidfds (src/linux/exit-watcher.ts watchReadable), so no thread of its own.

// The cgroup files are read with synchronous calls, microseconds each (docs/ARCHITECTURE.md, "Bun's thread pool").
import { closeSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  drain,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  eventfd,
  eventfdDrain,
  IN_CLOEXEC,
  IN_MODIFY,
  IN_NONBLOCK,
  inotifyAddWatch,
  inotifyInit,
  close as libcClose,
} from "./libc.ts";

export interface MemoryCgroup {
  version: 1 | 2;
  /** The cgroup's directory: where memory.oom_control (v1) or memory.events (v2) is. */
  dir: string;
}

/**
 * The memory cgroup of a process from the text of /proc/<pid>/cgroup. A v1 (or hybrid) host
 * has a line "N:…memory…:/path" (the memory controller is on v1 there even if "0::" is also
 * listed); a v2-only host has just "0::/path".
 */
export function memoryCgroupOf(procCgroup: string, root = "/sys/fs/cgroup"): MemoryCgroup | null {
  let unified: string | null = null;
  for (const line of procCgroup.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, hierarchy, controllers, path] = m as unknown as [string, string, string, string];
    if (controllers.split(",").includes("memory")) return { version: 1, dir: join(root, "memory", path) };
    if (hierarchy === "0" && controllers === "") unified = path;
  }
  return unified === null ? null : { version: 2, dir: join(root, unified) };
}

/** The "oom_kill N" count of memory.oom_control (v1) or memory.events (v2); 0 when absent. */
export function oomKillCount(text: string): number {
  const m = /^oom_kill (\d+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}

/** The file of a cgroup that carries its oom_kill counter. */
export function oomCounterFile(cg: MemoryCgroup): string {
  return join(cg.dir, cg.version === 1 ? "memory.oom_control" : "memory.events");
}

/** The cgroup's OOM kills so far; null when the cgroup is gone or unreadable. */
export async function readOomKills(cg: MemoryCgroup): Promise<number | null> {
  try {
    return oomKillCount(readFileSync(oomCounterFile(cg), "utf8"));
  } catch {
    return null;
  }
}

/** A container's OOM kills as they are counted. */
export interface OomWatch {
  /**
   * Whether the count rose since the watch began or since the last `true`: each kill is
   * answered once, whether the live notification or the exit asks first. Calls are answered
   * in order.
   */
  killed(): Promise<boolean>;
  /**
   * The cgroup's oom_kill counter as the kernel has it now (not from the baseline): what a
   * cgroup's stats report (containerd's Task Metrics, CRI's container_oom_events_total).
   * null once the cgroup is gone.
   */
  count(): Promise<number | null>;
  /** Ends the live notification and closes its fd; idempotent. */
  close(): void;
}

/** Live notification: how to poll an fd without a thread of our own, and whom to tell. */
export interface LiveOom {
  /** Calls onReady whenever fd is readable; returns the stop (ExitWatcher.watchReadable). */
  watchReadable(fd: number, onReady: () => void): () => void;
  /** Told of each OOM kill counted while the container runs. */
  onKill(): void;
}

/**
 * Starts watching `pid`'s memory cgroup (its count now is the baseline); null when the
 * process or its memory cgroup cannot be found (then no OOM is ever reported for it).
 * With `live`, kills are also told as they happen, as runc-v2 does: on v1 an eventfd
 * registered for memory.oom_control through cgroup.event_control (readable on each OOM), on
 * v2 inotify on memory.events (the kernel notifies its changes). If that cannot be set up
 * the exit still asks.
 */
export async function watchOom(pid: number, o: { root?: string; proc?: string; live?: LiveOom } = {}): Promise<OomWatch | null> {
  let text: string;
  try {
    text = readFileSync(join(o.proc ?? "/proc", String(pid), "cgroup"), "utf8");
  } catch {
    return null;
  }
  const cg = memoryCgroupOf(text, o.root);
  if (cg === null) return null;
  const base = await readOomKills(cg);
  if (base === null) return null;
  // Kills told so far (counted from `base`). Every question and notification is handled in
  // order, so a kill is told once whichever asks first.
  let told = 0;
  let queue: Promise<unknown> = Promise.resolve();
  const inOrder = <T>(f: () => Promise<T>): Promise<T> => {
    const p = queue.then(f);
    queue = p.catch(() => {});
    return p;
  };
  const killed = (): Promise<boolean> =>
    inOrder(async () => {
      const now = await readOomKills(cg);
      if (now === null || now - base <= told) return false;
      told = now - base;
      return true;
    });
  // v1's eventfd fires when the cgroup enters OOM, before the killer has counted its victim:
  // the notification itself is the kill (runc-v2 publishes on it too), counted ahead so the
  // count catching up later is not told again. A wake with the cgroup gone (rmdir signals
  // the eventfd too) is no OOM.
  const v1Notified = (): Promise<boolean> =>
    inOrder(async () => {
      const now = await readOomKills(cg);
      if (now === null) return false;
      told = Math.max(told + 1, now - base);
      return true;
    });
  let stopLive = () => {};
  if (o.live) {
    const live = o.live;
    const fd = await notifier(cg);
    if (fd !== null) {
      let stop: (() => void) | null = null;
      const onReady = () => {
        let ask: () => Promise<boolean>;
        if (cg.version === 1) {
          eventfdDrain(fd);
          ask = v1Notified;
        } else {
          drain(fd);
          ask = killed;
        }
        void ask().then((k) => k && stop !== null && live.onKill());
      };
      try {
        stop = live.watchReadable(fd, onReady);
      } catch {
        // No room to watch it (the watcher's capacity): no live events, and the count is still
        // read at exit. The fd is not ours to keep then.
        libcClose(fd);
        return { killed, count: () => readOomKills(cg), close: () => {} };
      }
      // Once only: close() is called both when the exit has been counted and by the
      // container's cleanup, and a second close(2) of the number would close whatever fd the
      // process has opened under it since (seen: a runc spawn's pipe, EBADF in its recv).
      let closed = false;
      stopLive = () => {
        if (closed) return;
        closed = true;
        stop?.();
        stop = null;
        libcClose(fd);
      };
    }
  }
  return { killed, count: () => readOomKills(cg), close: () => stopLive() };
}

/** The fd that becomes readable when the cgroup's OOM state changes; null if none can be made. */
async function notifier(cg: MemoryCgroup): Promise<number | null> {
  if (cg.version === 2) {
    const [fd] = inotifyInit(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return null;
    const [wd] = inotifyAddWatch(fd, oomCounterFile(cg), IN_MODIFY);
    if (wd < 0) {
      libcClose(fd);
      return null;
    }
    return fd;
  }
  const [efd] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return null;
  try {
    // The registration holds its own reference to oom_control: our fd may go at once.
    const control = openSync(oomCounterFile(cg), "r");
    try {
      writeFileSync(join(cg.dir, "cgroup.event_control"), `${efd} ${control}`);
    } finally {
      closeSync(control);
    }
    return efd;
  } catch {
    libcClose(efd);
    return null;
  }
}
