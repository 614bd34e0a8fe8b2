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
// Reading at exit needs no thread and no fd per container, and it is exact for what CRI
// shows (the reason of an exited container). What it does not do is runc-v2's live
// notification (v1 eventfd on memory.oom_control, v2 inotify on memory.events): an OOM kill
// of another process in a container whose init lives on is not published.

import { readFile } from "node:fs/promises";
import { join } from "node:path";

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
    return oomKillCount(await readFile(oomCounterFile(cg), "utf8"));
  } catch {
    return null;
  }
}

/** Answers, once the container has exited, whether its cgroup OOM-killed since the watch began. */
export interface OomWatch {
  killed(): Promise<boolean>;
}

/**
 * Starts watching `pid`'s memory cgroup (its count now is the baseline); null when the
 * process or its memory cgroup cannot be found (then no OOM is ever reported for it).
 */
export async function watchOom(pid: number, root = "/sys/fs/cgroup", proc = "/proc"): Promise<OomWatch | null> {
  let text: string;
  try {
    text = await readFile(join(proc, String(pid), "cgroup"), "utf8");
  } catch {
    return null;
  }
  const cg = memoryCgroupOf(text, root);
  if (cg === null) return null;
  const base = await readOomKills(cg);
  if (base === null) return null;
  return {
    killed: async () => {
      const now = await readOomKills(cg);
      return now !== null && now > base;
    },
  };
}
