// The daemon's metrics (src/daemon/metrics.ts) from fake sandboxes, served by the endpoint
// (src/daemon/metrics-server.ts) on a unix socket: what each family counts, the endpoint's
// paths and methods, and a socket path it must not take. The real daemon's figures are the
// e2e suite's (shared-metrics).
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { countUnder, DaemonMetrics, type MetricsSource } from "../../../src/daemon/metrics.ts";
import { serveMetrics } from "../../../src/daemon/metrics-server.ts";
import type { LiveWasm } from "../../../src/daemon/sandbox-host.ts";
import type { RuncStats } from "../../../src/linux/runc.ts";

const dir = mkdtempSync("/tmp/bwmu-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function live(id: string, stats: RuncStats, http?: ReturnType<LiveWasm["instance"]["httpCounters"]>): LiveWasm {
  return {
    namespace: "ns",
    id,
    view: `/nowhere/${id}/wasi-root`,
    instance: { stats: async () => stats, httpCounters: () => http } as unknown as LiveWasm["instance"],
  };
}

const source: MetricsSource = {
  sandboxes: () => [
    {
      o: { id: "pod-a", namespace: "ns" },
      service: {
        list: () => [
          { namespace: "ns", id: "w1", state: "running", kind: "wasm" },
          { namespace: "ns", id: "w2", state: "running", kind: "wasm" },
          { namespace: "ns", id: "pause", state: "running", kind: "native" },
          { namespace: "ns", id: "w3", state: "deleted", kind: "wasm" },
        ],
      },
      liveWasm: () => [
        live("w1", {
          cpu: { usage: { total: 1_500_000_000 }, throttling: { periods: 10, throttledPeriods: 4, throttledTime: 250_000_000 } },
          memory: { usage: { usage: 131072, limit: 1 << 20 } },
        }),
        // A wasi:http service whose Stats have no memory figure (not serving yet): no such
        // sample rather than a zero that would lie; its request counters instead.
        // Its latency as the engine reads it from the http library: a count per bucket, not cumulative.
        live(
          "w2",
          {},
          {
            requests: 7,
            failed: 1,
            inFlight: 2,
            connections: 3,
            latency: { bounds: [0.001, 0.01, 0.1], counts: [2, 4, 0, 1], sum: 0.5 },
          },
        ),
        // A service of an engine that does not time its requests: counters, no histogram.
        live("w4", {}, { requests: 1, failed: 0, inFlight: 0, connections: 0 }),
      ],
    },
  ],
  compiled: () => 1,
  running: () => 2,
};

test("figures read from the sandboxes, counters from what the daemon observed", async () => {
  const m = new DaemonMetrics();
  m.ensured("compiled");
  m.ensured("cache");
  m.ensured("cache");
  m.killExited(0.0002);
  m.killExited(0.03);
  const ep = await serveMetrics({ kind: "unix", path: join(dir, "m.sock") }, m, source);
  try {
    expect(ep.address).toBe(`unix://${join(dir, "m.sock")}`);
    expect(statSync(join(dir, "m.sock")).mode & 0o777).toBe(0o600);
    const r = await fetch("http://localhost/metrics", { unix: join(dir, "m.sock") });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const lines = (await r.text()).split("\n");
    for (const l of [
      "bunwasi_sandboxes 1",
      'bunwasi_containers{kind="wasm",state="running"} 2',
      // A Delete under way counts as stopped, as State reports it.
      'bunwasi_containers{kind="wasm",state="stopped"} 1',
      'bunwasi_containers{kind="native",state="running"} 1',
      'bunwasi_containers{kind="wasm",state="paused"} 0',
      "bunwasi_wasm_runs 2",
      'bunwasi_container_cpu_seconds_total{namespace="ns",id="w1",sandbox="pod-a"} 1.5',
      'bunwasi_container_cpu_throttled_periods_total{namespace="ns",id="w1",sandbox="pod-a"} 4',
      'bunwasi_container_cpu_throttled_seconds_total{namespace="ns",id="w1",sandbox="pod-a"} 0.25',
      'bunwasi_container_memory_bytes{namespace="ns",id="w1",sandbox="pod-a"} 131072',
      'bunwasi_container_memory_limit_bytes{namespace="ns",id="w1",sandbox="pod-a"} 1048576',
      // No fd of this process is under the fake views.
      'bunwasi_container_open_files{namespace="ns",id="w1",sandbox="pod-a"} 0',
      "bunwasi_compiles_total 1",
      "bunwasi_compile_cache_hits_total 2",
      "bunwasi_compile_cache_misses_total 1",
      'bunwasi_kill_exit_seconds_bucket{le="0.0005"} 1',
      'bunwasi_kill_exit_seconds_bucket{le="0.025"} 1',
      'bunwasi_kill_exit_seconds_bucket{le="0.05"} 2',
      'bunwasi_kill_exit_seconds_bucket{le="+Inf"} 2',
      "bunwasi_kill_exit_seconds_count 2",
    ])
      expect(lines).toContain(l);
    expect(lines.filter((l) => l.includes('id="w2"'))).toEqual([
      // Its open files are /proc's to say, not the engine's.
      'bunwasi_container_open_files{namespace="ns",id="w2",sandbox="pod-a"} 0',
      'bunwasi_http_requests_total{namespace="ns",id="w2",sandbox="pod-a"} 7',
      // Cumulative buckets, +Inf and _count with every request.
      'bunwasi_http_request_duration_seconds_bucket{namespace="ns",id="w2",sandbox="pod-a",le="0.001"} 2',
      'bunwasi_http_request_duration_seconds_bucket{namespace="ns",id="w2",sandbox="pod-a",le="0.01"} 6',
      'bunwasi_http_request_duration_seconds_bucket{namespace="ns",id="w2",sandbox="pod-a",le="0.1"} 6',
      'bunwasi_http_request_duration_seconds_bucket{namespace="ns",id="w2",sandbox="pod-a",le="+Inf"} 7',
      'bunwasi_http_request_duration_seconds_sum{namespace="ns",id="w2",sandbox="pod-a"} 0.5',
      'bunwasi_http_request_duration_seconds_count{namespace="ns",id="w2",sandbox="pod-a"} 7',
      'bunwasi_http_requests_failed_total{namespace="ns",id="w2",sandbox="pod-a"} 1',
      'bunwasi_http_requests_in_flight{namespace="ns",id="w2",sandbox="pod-a"} 2',
      'bunwasi_http_connections{namespace="ns",id="w2",sandbox="pod-a"} 3',
    ]);
    // A module that is not a service has no http samples.
    expect(lines.filter((l) => l.startsWith("bunwasi_http_") && l.includes('id="w1"'))).toEqual([]);
    // A service without latency figures has its counters and no histogram (no empty one).
    expect(lines.filter((l) => l.includes('id="w4"')).map((l) => l.split("{")[0])).toEqual([
      "bunwasi_container_open_files",
      "bunwasi_http_requests_total",
      "bunwasi_http_requests_failed_total",
      "bunwasi_http_requests_in_flight",
      "bunwasi_http_connections",
    ]);
    expect(lines).toContain("# TYPE bunwasi_http_request_duration_seconds histogram");
    const rss = Number(lines.find((l) => l.startsWith("process_resident_memory_bytes "))?.split(" ")[1]);
    expect(rss).toBeGreaterThan(0);
    expect(Number(lines.find((l) => l.startsWith("process_threads "))?.split(" ")[1])).toBeGreaterThan(0);
    expect(Number(lines.find((l) => l.startsWith("process_open_fds "))?.split(" ")[1])).toBeGreaterThan(2);

    expect((await fetch("http://localhost/", { unix: join(dir, "m.sock") })).status).toBe(404);
    expect((await fetch("http://localhost/metrics", { unix: join(dir, "m.sock"), method: "POST" })).status).toBe(405);
    const head = await fetch("http://localhost/metrics", { unix: join(dir, "m.sock"), method: "HEAD" });
    expect(head.status).toBe(200);
    // A second endpoint on a live socket is refused; it is not taken over.
    expect(serveMetrics({ kind: "unix", path: join(dir, "m.sock") }, m, source)).rejects.toThrow("is in use");
  } finally {
    await ep.close();
  }
  expect(existsSync(join(dir, "m.sock"))).toBe(false);
});

test("a file that is not a socket is not ours to replace; a stale socket is", async () => {
  writeFileSync(join(dir, "file"), "keep");
  expect(serveMetrics({ kind: "unix", path: join(dir, "file") }, new DaemonMetrics(), source)).rejects.toThrow(
    "exists and is not a socket",
  );
  expect(existsSync(join(dir, "file"))).toBe(true);
  // A socket nobody listens on: a killed daemon's (a process that bound it, SIGKILLed).
  const stale = join(dir, "stale.sock");
  const holder = Bun.spawn(
    [
      process.execPath,
      "-e",
      `Bun.listen({ unix: ${JSON.stringify(stale)}, socket: { data() {} } }); console.log("bound"); setInterval(() => {}, 1e6)`,
    ],
    { stdout: "pipe" },
  );
  const reader = holder.stdout.getReader();
  expect(new TextDecoder().decode((await reader.read()).value)).toContain("bound");
  holder.kill("SIGKILL");
  await holder.exited;
  expect(statSync(stale).isSocket()).toBe(true);
  const ep = await serveMetrics({ kind: "unix", path: stale }, new DaemonMetrics(), source);
  expect((await fetch("http://localhost/metrics", { unix: stale })).status).toBe(200);
  await ep.close();
});

test("a TCP endpoint on port 0 says the port it got", async () => {
  const ep = await serveMetrics({ kind: "tcp", hostname: "127.0.0.1", port: 0 }, new DaemonMetrics(), source);
  try {
    const port = Number(/^127\.0\.0\.1:(\d+)$/.exec(ep.address)?.[1]);
    expect(port).toBeGreaterThan(0);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
  } finally {
    await ep.close();
  }
});

test("open files: links at a view or under it, not a sibling that shares its prefix", () => {
  expect(
    countUnder(
      ["/s/a/wasi-root", "/s/a/wasi-root/x", "/s/a/wasi-rootx", "/s/ab/wasi-root/y", "socket:[1]"],
      ["/s/a/wasi-root", "/s/ab/wasi-root"],
    ),
  ).toEqual([2, 1]);
});
