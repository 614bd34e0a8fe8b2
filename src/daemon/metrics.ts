// The daemon's metrics, as Prometheus families (./exposition.ts). Most figures are read when
// scraped from where they already are: the sandboxes and their Task services (containers by
// state), each running wasm container's Stats (the same figures the task API's Stats gives
// containerd: its thread's CPU time, its linear memory, the engine's CPU throttle words), the
// compile count (./compiles.ts), the runs in flight, a wasi:http service's request counters
// and latency histogram (kept by the http library, read through RunContext.onHttpService),
// /proc for open files and the daemon itself. Two are counted as they happen, since nothing keeps them: compile-cache hits and
// misses of Creates, and how long a kill took to end a run. Loaded only with
// --metrics-address (./metrics-server.ts), so a daemon without it counts neither.

import { readdir, readFile, readlink } from "node:fs/promises";
import type { Filled } from "../engines/cache.ts";
import type { TaskState } from "../task/state.ts";
import { type Family, Histogram, type Sample } from "./exposition.ts";
import type { DaemonObserver, LiveWasm } from "./sandbox-host.ts";

/** What the daemon's metrics read when scraped. */
export interface MetricsSource {
  /** The sandboxes served now. */
  sandboxes(): Iterable<{
    o: { id: string; namespace: string };
    service: { list(): { namespace: string; id: string; state: TaskState; kind: "wasm" | "native" }[] };
    liveWasm(): Iterable<LiveWasm>;
  }>;
  /** Modules compiled since the daemon started (./compiles.ts). */
  compiled(): number;
  /** Wasm runs in flight on the daemon's threads. */
  running(): number;
}

/**
 * Upper bounds of the kill-to-exit histogram, in seconds. A module busy in wasm stops at its
 * next epoch check (well under a millisecond); one blocked in a host call is let go after the
 * daemon's kill grace (20 ms); a wasi:http service drains its requests first (seconds).
 */
export const KILL_EXIT_BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** The task states a container is counted in (a Delete under way counts as stopped, as State reports it). */
const STATES = ["created", "running", "paused", "stopped"] as const;
const KINDS = ["wasm", "native"] as const;

export class DaemonMetrics implements DaemonObserver {
  private hits = 0;
  private misses = 0;
  private readonly killExit = new Histogram(KILL_EXIT_BOUNDS);

  // Arrow functions: handed on as callbacks (sandbox-host.ts).
  readonly ensured = (from: Filled): void => {
    if (from === "cache") this.hits++;
    else this.misses++;
  };

  readonly killExited = (seconds: number): void => {
    this.killExit.observe(seconds);
  };

  /** Every family, read now. */
  async families(source: MetricsSource): Promise<Family[]> {
    const sandboxes = [...source.sandboxes()];
    const byState = new Map<string, number>();
    const live: (LiveWasm & { sandbox: string })[] = [];
    for (const sb of sandboxes) {
      for (const c of sb.service.list()) {
        const key = `${c.kind}\0${c.state === "deleted" ? "stopped" : c.state}`;
        byState.set(key, (byState.get(key) ?? 0) + 1);
      }
      for (const w of sb.liveWasm()) live.push({ ...w, sandbox: sb.o.id });
    }
    // The fd table first, alone: the reads below hold fds of their own for a while.
    const fds = await openFds();
    // Every Stats asked in this turn before any is awaited: the engine answers the memory
    // asks of one turn with one epoch bump (inproc-runtime.ts stats()).
    const stats = live.map((w) => w.instance.stats().catch(() => undefined));
    const [figures, self] = await Promise.all([Promise.all(stats), processFigures(fds.ok ? fds.count : undefined)]);
    const openByView = countUnder(
      fds.links,
      live.map((w) => w.view),
    );

    const perContainer = (pick: (i: number) => number | undefined): Sample[] =>
      live.flatMap((w, i) => {
        const v = pick(i);
        return v === undefined ? [] : [{ labels: { namespace: w.namespace, id: w.id, sandbox: w.sandbox }, value: v }];
      });
    const cpu = (i: number) => figures[i]?.cpu;
    const http = live.map((w) => w.instance.httpCounters());
    const ns = (n: number | undefined) => (n === undefined ? undefined : n / 1e9);

    return [
      { name: "bunwasi_sandboxes", help: "Sandboxes (pods) the daemon serves.", type: "gauge", samples: [{ value: sandboxes.length }] },
      {
        name: "bunwasi_containers",
        help: "Containers of the daemon's sandboxes by kind (wasm: run on the daemon's threads; native: under runc) and task state.",
        type: "gauge",
        samples: KINDS.flatMap((kind) =>
          STATES.map((state) => ({ labels: { kind, state }, value: byState.get(`${kind}\0${state}`) ?? 0 })),
        ),
      },
      {
        name: "bunwasi_wasm_runs",
        help: "Wasm modules running on the daemon's threads.",
        type: "gauge",
        samples: [{ value: source.running() }],
      },
      {
        name: "bunwasi_container_cpu_seconds_total",
        help: "CPU time of the thread running a wasm container's module (user and system).",
        type: "counter",
        samples: perContainer((i) => ns(cpu(i)?.usage?.total)),
      },
      {
        name: "bunwasi_container_cpu_throttled_periods_total",
        help: "CPU quota periods in which the engine held a wasm container's module back (as a cgroup's cpu.stat nr_throttled).",
        type: "counter",
        samples: perContainer((i) => cpu(i)?.throttling?.throttledPeriods),
      },
      {
        name: "bunwasi_container_cpu_throttled_seconds_total",
        help: "Time the engine held a wasm container's module back to its CPU quota.",
        type: "counter",
        samples: perContainer((i) => ns(cpu(i)?.throttling?.throttledTime)),
      },
      {
        name: "bunwasi_container_memory_bytes",
        help: "Linear memory of a wasm container's module (what the task API's Stats reports as its memory usage).",
        type: "gauge",
        samples: perContainer((i) => figures[i]?.memory?.usage?.usage),
      },
      {
        name: "bunwasi_container_memory_limit_bytes",
        help: "The memory limit of a wasm container's module (its store's: the spec's, else the daemon's default).",
        type: "gauge",
        samples: perContainer((i) => {
          const l = figures[i]?.memory?.usage?.limit;
          return l ? l : undefined;
        }),
      },
      {
        name: "bunwasi_container_open_files",
        help: "Files and directories a wasm container's module holds open through its WASI view, its preopened root included (sockets are not counted).",
        type: "gauge",
        samples: fds.ok ? perContainer((i) => openByView[i]) : [],
      },
      {
        name: "bunwasi_http_requests_total",
        help: "Requests a wasm container's wasi:http service received.",
        type: "counter",
        samples: perContainer((i) => http[i]?.requests),
      },
      {
        name: "bunwasi_http_request_duration_seconds",
        help: "How long a wasm container's wasi:http service took per request, from the request's head read to its response body's end (or its failure).",
        type: "histogram",
        samples: live.flatMap((w, i) => {
          const l = http[i]?.latency;
          return l
            ? [{ labels: { namespace: w.namespace, id: w.id, sandbox: w.sandbox }, bounds: l.bounds, counts: l.counts, sum: l.sum }]
            : [];
        }),
      },
      {
        name: "bunwasi_http_requests_failed_total",
        help: "Requests a wasm container's wasi:http service answered 500 (the guest trapped or failed).",
        type: "counter",
        samples: perContainer((i) => http[i]?.failed),
      },
      {
        name: "bunwasi_http_requests_in_flight",
        help: "Requests a wasm container's wasi:http service is handling now.",
        type: "gauge",
        samples: perContainer((i) => http[i]?.inFlight),
      },
      {
        name: "bunwasi_http_connections",
        help: "Open connections to a wasm container's wasi:http service.",
        type: "gauge",
        samples: perContainer((i) => http[i]?.connections),
      },
      {
        name: "bunwasi_compiles_total",
        help: "Modules the daemon compiled (once per module: concurrent Creates of one module share a compile).",
        type: "counter",
        samples: [{ value: source.compiled() }],
      },
      {
        name: "bunwasi_compile_cache_hits_total",
        help: "Wasm Creates whose module was found compiled in the compile cache.",
        type: "counter",
        samples: [{ value: this.hits }],
      },
      {
        name: "bunwasi_compile_cache_misses_total",
        help: "Wasm Creates that waited for their module's compile (their own or one under way).",
        type: "counter",
        samples: [{ value: this.misses }],
      },
      {
        name: "bunwasi_kill_exit_seconds",
        help: "From the first kill of a running wasm container to the end of its module's run.",
        type: "histogram",
        samples: [this.killExit.sample()],
      },
      ...self,
    ];
  }
}

/** The daemon's open fds and where each leads (readlink of /proc/self/fd). */
async function openFds(): Promise<{ ok: boolean; count: number; links: string[] }> {
  let names: string[];
  try {
    names = await readdir("/proc/self/fd");
  } catch {
    return { ok: false, count: 0, links: [] };
  }
  const links = await Promise.all(names.map((n) => readlink(`/proc/self/fd/${n}`).catch(() => "")));
  // readdir's own fd is in the list, closed by now: its readlink failed.
  return { ok: true, count: links.filter(Boolean).length, links };
}

/** For each directory, how many links lead to it or under it. */
export function countUnder(links: readonly string[], dirs: readonly string[]): number[] {
  return dirs.map((d) => links.filter((l) => l === d || l.startsWith(`${d}/`)).length);
}

/** The daemon process: the usual process_* families, its PSS and threads. */
async function processFigures(openFdCount: number | undefined): Promise<Family[]> {
  const [status, limits, rollup] = await Promise.all([
    readFile("/proc/self/status", "utf8").catch(() => ""),
    readFile("/proc/self/limits", "utf8").catch(() => ""),
    readFile("/proc/self/smaps_rollup", "utf8").catch(() => ""),
  ]);
  const kB = (text: string, key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const one = (name: string, help: string, type: "counter" | "gauge", v: number | undefined): Family[] =>
    v === undefined ? [] : [{ name, help, type, samples: [{ value: v }] }];
  const threads = /^Threads:\s+(\d+)/m.exec(status)?.[1];
  const maxFds = /^Max open files\s+(\d+)/m.exec(limits)?.[1];
  const cpu = process.cpuUsage();
  return [
    ...one(
      "process_cpu_seconds_total",
      "CPU time of the daemon, every thread (its modules' included).",
      "counter",
      (cpu.user + cpu.system) / 1e6,
    ),
    ...one("process_resident_memory_bytes", "The daemon's resident memory (RSS).", "gauge", kB(status, "VmRSS")),
    ...one("process_virtual_memory_bytes", "The daemon's virtual memory size.", "gauge", kB(status, "VmSize")),
    ...one(
      "bunwasi_daemon_pss_bytes",
      "The daemon's proportional set size (shared pages split among the processes that map them).",
      "gauge",
      kB(rollup, "Pss"),
    ),
    ...one("process_threads", "The daemon's threads.", "gauge", threads === undefined ? undefined : Number(threads)),
    ...one("process_open_fds", "The daemon's open file descriptors.", "gauge", openFdCount),
    ...one("process_max_fds", "The daemon's limit of open file descriptors.", "gauge", maxFds === undefined ? undefined : Number(maxFds)),
  ];
}
