// Task Stats: the OCI runtime's cgroup statistics (`runc events --stats`) in the shape
// containerd decodes, cgroup v1 or v2 Metrics depending on the host.

import { statfsSync } from "node:fs";
import { Metrics as MetricsV1 } from "./gen/containerd/cgroups/v1/metrics.ts";
import { Metrics as MetricsV2 } from "./gen/containerd/cgroups/v2/metrics.ts";
import type { Any } from "./gen/google/protobuf/any.ts";
import type { RuncStats } from "./runc.ts";

const CGROUP2_SUPER_MAGIC = 0x63677270;

export const cgroupV2 = (() => {
  try {
    return statfsSync("/sys/fs/cgroup").type === CGROUP2_SUPER_MAGIC;
  } catch {
    return false;
  }
})();

export function metricsAny(s: RuncStats): Any {
  const raw = s.memory?.raw ?? {};
  if (cgroupV2) {
    const m = MetricsV2.fromPartial({
      pids: { current: s.pids?.current ?? 0, limit: s.pids?.limit ?? 0 },
      cpu: {
        usageUsec: Math.floor((s.cpu?.usage?.total ?? 0) / 1000),
        userUsec: Math.floor((s.cpu?.usage?.user ?? 0) / 1000),
        systemUsec: Math.floor((s.cpu?.usage?.kernel ?? 0) / 1000),
      },
      memory: {
        anon: raw.anon ?? 0,
        file: raw.file ?? 0,
        usage: s.memory?.usage?.usage ?? 0,
        usageLimit: s.memory?.usage?.limit ?? 0,
        maxUsage: s.memory?.usage?.max ?? 0,
        swapUsage: s.memory?.swap?.usage ?? 0,
        swapLimit: s.memory?.swap?.limit ?? 0,
      },
    });
    return { typeUrl: MetricsV2.$type, value: MetricsV2.encode(m).finish() };
  }
  const m = MetricsV1.fromPartial({
    pids: { current: s.pids?.current ?? 0, limit: s.pids?.limit ?? 0 },
    cpu: { usage: { total: s.cpu?.usage?.total ?? 0, kernel: s.cpu?.usage?.kernel ?? 0, user: s.cpu?.usage?.user ?? 0 } },
    memory: {
      cache: raw.cache ?? 0,
      rss: raw.rss ?? 0,
      totalCache: raw.total_cache ?? 0,
      totalRss: raw.total_rss ?? 0,
      usage: { usage: s.memory?.usage?.usage ?? 0, limit: s.memory?.usage?.limit ?? 0, max: s.memory?.usage?.max ?? 0 },
      swap: { usage: s.memory?.swap?.usage ?? 0, limit: s.memory?.swap?.limit ?? 0 },
    },
  });
  return { typeUrl: MetricsV1.$type, value: MetricsV1.encode(m).finish() };
}
