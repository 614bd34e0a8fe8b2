// Task Stats: the runtime's numbers as the cgroup v1 or v2 Metrics containerd decodes; the
// host says which, once, instead of a probe at import.
import { describe, expect, test } from "bun:test";
import type { RuncStats } from "../../../src/linux/runc.ts";
import { Metrics as MetricsV1 } from "../../../src/task/gen/containerd/cgroups/v1/metrics.ts";
import { Metrics as MetricsV2 } from "../../../src/task/gen/containerd/cgroups/v2/metrics.ts";
import { addStats, metricsAny, probeCgroupV2 } from "../../../src/task/stats.ts";

// As `runc events --stats` prints them (runc 1.1: camelCase throttling fields).
const stats = {
  cpu: {
    usage: { total: 5_000_000, kernel: 1_000_000, user: 4_000_000, percpu: [2_000_000, 3_000_000] },
    throttling: { periods: 31, throttledPeriods: 30, throttledTime: 2_451_278_340 },
  },
  memory: { usage: { usage: 4096, limit: 8192 }, raw: { anon: 100, cache: 200 } },
  pids: { current: 3, limit: 64 },
};

describe("metricsAny", () => {
  test("the OOM kill count, when counted, is v1's memory_oom_control and v2's memory_events (CRI's container_oom_events_total)", () => {
    const v1 = MetricsV1.decode(metricsAny({ ...stats, oomKills: 2 }, false).value);
    expect(v1.memoryOomControl).toEqual({ oomKillDisable: 0, underOom: 0, oomKill: 2 });
    const v2 = MetricsV2.decode(metricsAny({ ...stats, oomKills: 0 }, true).value);
    expect(v2.memoryEvents).toEqual({ low: 0, high: 0, max: 0, oom: 0, oomKill: 0 });
    // Not counted (no cgroup found): absent, not a zero that was never read.
    expect(MetricsV1.decode(metricsAny(stats, false).value).memoryOomControl).toBeUndefined();
    expect(MetricsV2.decode(metricsAny(stats, true).value).memoryEvents).toBeUndefined();
  });

  test("cgroup v2: usec, throttling and the unified memory fields", () => {
    const any = metricsAny(stats, true);
    expect(any.typeUrl).toBe(MetricsV2.$type);
    const m = MetricsV2.decode(any.value);
    expect(m.cpu).toMatchObject({
      usageUsec: 5000,
      userUsec: 4000,
      systemUsec: 1000,
      nrPeriods: 31,
      nrThrottled: 30,
      throttledUsec: 2_451_278,
    });
    expect(m.memory).toMatchObject({ anon: 100, usage: 4096, usageLimit: 8192 });
    expect(m.pids).toMatchObject({ current: 3, limit: 64 });
  });

  test("cgroup v1: ns, per-cpu list, throttling and the v1 memory fields", () => {
    const any = metricsAny(stats, false);
    expect(any.typeUrl).toBe(MetricsV1.$type);
    const m = MetricsV1.decode(any.value);
    expect(m.cpu?.usage).toMatchObject({ total: 5_000_000, perCpu: [2_000_000, 3_000_000] });
    expect(m.cpu?.throttling).toEqual({ periods: 31, throttledPeriods: 30, throttledTime: 2_451_278_340 });
    expect(m.memory).toMatchObject({ cache: 200, usage: { usage: 4096, limit: 8192, max: 0, failcnt: 0 } });
  });
});

describe("probeCgroupV2", () => {
  test("only a cgroup2 filesystem counts", async () => {
    expect(await probeCgroupV2("/proc")).toBe(false);
    expect(await probeCgroupV2("/no/such/dir")).toBe(false);
  });
});

describe("addStats: a pod's statistics from its containers'", () => {
  test("counters and usages add up, per-CPU times CPU by CPU, raw memory fields key by key", () => {
    const a: RuncStats = {
      cpu: { usage: { total: 10, kernel: 4, user: 6, percpu: [7, 3] }, throttling: { periods: 2, throttledPeriods: 1, throttledTime: 5 } },
      memory: { usage: { usage: 100, limit: 1000, max: 150, failcnt: 1 }, raw: { anon: 60, file: 40 } },
      pids: { current: 1, limit: 10 },
    };
    const b: RuncStats = {
      cpu: { usage: { total: 5, kernel: 1, user: 4, percpu: [1, 2, 2] } },
      memory: { usage: { usage: 50, limit: 500, max: 60 }, raw: { anon: 50, shmem: 1 } },
      pids: { current: 2, limit: 5 },
    };
    const s = addStats([a, b]);
    expect(s.cpu?.usage).toEqual({ total: 15, kernel: 5, user: 10, percpu: [8, 5, 2] });
    expect(s.cpu?.throttling).toEqual({ periods: 2, throttledPeriods: 1, throttledTime: 5 });
    expect(s.memory?.usage).toEqual({ usage: 150, limit: 1500, max: 210, failcnt: 1 });
    expect(s.memory?.raw).toEqual({ anon: 110, file: 40, shmem: 1 });
    expect(s.pids).toEqual({ current: 3, limit: 15 });
  });

  test("one container without a limit makes the pod's unlimited (0); no containers, all zero", () => {
    const s = addStats([{ memory: { usage: { usage: 1, limit: 100 } } }, { memory: { usage: { usage: 2 } } }]);
    expect(s.memory?.usage?.limit).toBe(0);
    expect(s.memory?.usage?.usage).toBe(3);
    const none = addStats([]);
    expect(none.cpu?.usage?.total).toBe(0);
    expect(none.pids).toEqual({ current: 0, limit: 0 });
  });
});
