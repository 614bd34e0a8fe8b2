// Task Stats: the OCI runtime's cgroup statistics (`runc events --stats`) in the shape
// containerd decodes, cgroup v1 or v2 Metrics depending on the host.

import { statfsSync } from "node:fs";
import type { RuncMemoryEntry, RuncStats } from "../linux/runc.ts";
import { Metrics as MetricsV1 } from "./gen/containerd/cgroups/v1/metrics.ts";
import { Metrics as MetricsV2 } from "./gen/containerd/cgroups/v2/metrics.ts";
import type { Any } from "./gen/google/protobuf/any.ts";

const CGROUP2_SUPER_MAGIC = 0x63677270;

/** Whether the host mounts the unified hierarchy (cgroup v2); probed once by whoever builds the host. */
export async function probeCgroupV2(root = "/sys/fs/cgroup"): Promise<boolean> {
  try {
    return statfsSync(root).type === CGROUP2_SUPER_MAGIC;
  } catch {
    return false; // no cgroupfs where expected: runc reports v1-shaped stats then
  }
}

export function metricsAny(s: RuncStats, cgroupV2: boolean): Any {
  const raw = s.memory?.raw ?? {};
  // runc's throttling and per-cpu fields (omitted by runc when zero/absent). Without them
  // `ctr task metrics` showed `cpuacct.usage_percpu []` where the runc shim shows the list.
  const thr = s.cpu?.throttling ?? {};
  if (cgroupV2) {
    const m = MetricsV2.fromPartial({
      pids: { current: s.pids?.current ?? 0, limit: s.pids?.limit ?? 0 },
      cpu: {
        usageUsec: Math.floor((s.cpu?.usage?.total ?? 0) / 1000),
        userUsec: Math.floor((s.cpu?.usage?.user ?? 0) / 1000),
        systemUsec: Math.floor((s.cpu?.usage?.kernel ?? 0) / 1000),
        nrPeriods: thr.periods ?? 0,
        nrThrottled: thr.throttledPeriods ?? 0,
        throttledUsec: Math.floor((thr.throttledTime ?? 0) / 1000),
      },
      memory: {
        anon: raw.anon ?? 0,
        file: raw.file ?? 0,
        kernelStack: raw.kernel_stack ?? 0,
        slab: raw.slab ?? 0,
        sock: raw.sock ?? 0,
        shmem: raw.shmem ?? 0,
        fileMapped: raw.file_mapped ?? 0,
        usage: s.memory?.usage?.usage ?? 0,
        usageLimit: s.memory?.usage?.limit ?? 0,
        maxUsage: s.memory?.usage?.max ?? 0,
        swapUsage: s.memory?.swap?.usage ?? 0,
        swapLimit: s.memory?.swap?.limit ?? 0,
      },
      // Present when counted (CRI leaves out container_oom_events_total without it).
      ...(s.oomKills !== undefined ? { memoryEvents: { oomKill: s.oomKills } } : {}),
    });
    return { typeUrl: MetricsV2.$type, value: MetricsV2.encode(m).finish() };
  }
  const m = MetricsV1.fromPartial({
    pids: { current: s.pids?.current ?? 0, limit: s.pids?.limit ?? 0 },
    cpu: {
      usage: {
        total: s.cpu?.usage?.total ?? 0,
        kernel: s.cpu?.usage?.kernel ?? 0,
        user: s.cpu?.usage?.user ?? 0,
        perCpu: s.cpu?.usage?.percpu ?? [],
      },
      throttling: { periods: thr.periods ?? 0, throttledPeriods: thr.throttledPeriods ?? 0, throttledTime: thr.throttledTime ?? 0 },
    },
    memory: {
      cache: raw.cache ?? 0,
      rss: raw.rss ?? 0,
      rssHuge: raw.rss_huge ?? 0,
      mappedFile: raw.mapped_file ?? 0,
      dirty: raw.dirty ?? 0,
      writeback: raw.writeback ?? 0,
      inactiveAnon: raw.inactive_anon ?? 0,
      activeAnon: raw.active_anon ?? 0,
      inactiveFile: raw.inactive_file ?? 0,
      activeFile: raw.active_file ?? 0,
      unevictable: raw.unevictable ?? 0,
      totalCache: raw.total_cache ?? 0,
      totalRss: raw.total_rss ?? 0,
      usage: memoryEntry(s.memory?.usage),
      swap: memoryEntry(s.memory?.swap),
      kernel: memoryEntry(s.memory?.kernel),
    },
    ...(s.oomKills !== undefined ? { memoryOomControl: { oomKill: s.oomKills } } : {}),
  });
  return { typeUrl: MetricsV1.$type, value: MetricsV1.encode(m).finish() };
}

function memoryEntry(e: RuncMemoryEntry | undefined) {
  return { usage: e?.usage ?? 0, limit: e?.limit ?? 0, max: e?.max ?? 0, failcnt: e?.failcnt ?? 0 };
}

/**
 * Several containers' statistics as one (a pod's, for the Sandbox API's SandboxMetrics):
 * counters and usages add up, per-CPU times add up CPU by CPU. A limit adds up only when
 * every container has one: one unlimited container makes the pod unlimited (0).
 */
export function addStats(all: RuncStats[]): RuncStats {
  const sum = (f: (s: RuncStats) => number | undefined) => all.reduce((n, s) => n + (f(s) ?? 0), 0);
  const limit = (f: (s: RuncStats) => number | undefined) => (all.length > 0 && all.every((s) => (f(s) ?? 0) > 0) ? sum(f) : 0);
  const entry = (f: (s: RuncStats) => RuncMemoryEntry | undefined): RuncMemoryEntry => ({
    usage: sum((s) => f(s)?.usage),
    limit: limit((s) => f(s)?.limit),
    max: sum((s) => f(s)?.max),
    failcnt: sum((s) => f(s)?.failcnt),
  });
  const percpu: number[] = [];
  const raw: Record<string, number> = {};
  for (const s of all) {
    for (const [i, v] of (s.cpu?.usage?.percpu ?? []).entries()) percpu[i] = (percpu[i] ?? 0) + v;
    for (const [k, v] of Object.entries(s.memory?.raw ?? {})) raw[k] = (raw[k] ?? 0) + v;
  }
  return {
    cpu: {
      usage: {
        total: sum((s) => s.cpu?.usage?.total),
        kernel: sum((s) => s.cpu?.usage?.kernel),
        user: sum((s) => s.cpu?.usage?.user),
        percpu,
      },
      throttling: {
        periods: sum((s) => s.cpu?.throttling?.periods),
        throttledPeriods: sum((s) => s.cpu?.throttling?.throttledPeriods),
        throttledTime: sum((s) => s.cpu?.throttling?.throttledTime),
      },
    },
    memory: { usage: entry((s) => s.memory?.usage), swap: entry((s) => s.memory?.swap), kernel: entry((s) => s.memory?.kernel), raw },
    pids: { current: sum((s) => s.pids?.current), limit: limit((s) => s.pids?.limit) },
  };
}
