// A wasi:http service: a component exporting `wasi:http/incoming-handler@0.2.x`, served over
// HTTP/1.1 by bunwasi's wasi:http host library (native/http-host) inside the container's
// network namespace (docs/ARCHITECTURE.md, "wasi:http services").
//
// The library owns the socket, hyper and the guest's stores (a fresh one per request); this
// module owns the configuration (runwasi's environment variables), which compiled artifact
// it maps (one its caller checked) and the lifecycle: a kill (SIGTERM, SIGINT, … through the run's AbortSignal) stops accepting, lets
// the requests in flight finish within the grace period, and ends the run with 0 when they
// did, 128+s when the grace period ran out first. A second kill during the drain (the
// run's stopNow) ends it at once with 128 + that signal, as servers do on a second Ctrl-C.

import { type Pointer, ptr } from "bun:ffi";
import { EXIT_ENGINE_ERROR } from "../../../common/constants.ts";
import { SIGNALS, signalNumber } from "../../../common/signals.ts";
import { type CpuLimits, MemoryLimitBelowUsage, type RunControl } from "../../engine.ts";
import { callerCpus } from "../cpu-confine.ts";
import { niceOfShares } from "../cpu-throttle.ts";
import { encodeConfig, type HttpHostLib, type HttpLatency, httpHost, latencyReader, startHttpServer } from "./ffi.ts";
import { requireHttpHost } from "./library.ts";

/** Where to listen (runwasi's and `wasmtime serve`'s name); default 0.0.0.0:8080. */
export const ADDR_ENV = "WASMTIME_HTTP_PROXY_SOCKET_ADDR";
/** The listen backlog, default 100. runwasi's code reads the second name; both are accepted. */
export const BACKLOG_ENVS = ["WASMTIME_HTTP_PROXY_BACKLOG", "WASMTIME_HTTP_BACKLOG"] as const;
export const DEFAULT_ADDR = "0.0.0.0:8080";
export const DEFAULT_BACKLOG = 100;
/**
 * How long in-flight requests may take after a stop (kubelet's default
 * terminationGracePeriodSeconds; it sends SIGKILL after its own period anyway).
 * BUNWASI_HTTP_GRACE_MS in the container's environment overrides.
 */
export const STOP_GRACE_MS = 30_000;
/**
 * Guests a service runs at once; further requests wait for a turn. With the memory limit
 * (all of its stores together) it bounds what one service takes of its host: the executor's
 * cgroup in normal mode, the daemon in shared mode. Not the container's to raise.
 */
export const MAX_REQUESTS = 100;

const STATE_STOPPED = 2;
/** The library's counters (`bunwasi_http_counter`) beyond the request counts. */
const MEMORY_USED = 4;
const MEMORY_LIMIT = 5;
const CPU_NS = 6;
const CPU_CHECKS = 7;
const CPU_THROTTLED = 8;
const THROTTLED_NS = 9;
/** The library's "no memory limit". */
const NO_LIMIT = 0xffff_ffff_ffff_ffffn;

/** The library's quota, period and nice value for `cpu` (a quota <= 0 or absent: none; the kernel's default period). */
function cpuWords(cpu: CpuLimits): { quota: number; period: number; nice: number } {
  const quota = cpu.quota !== undefined && cpu.quota > 0 ? Math.floor(cpu.quota) : 0;
  const period = cpu.period !== undefined && cpu.period > 0 ? Math.floor(cpu.period) : 100_000;
  return { quota, period, nice: cpu.shares !== undefined && cpu.shares > 0 ? niceOfShares(cpu.shares) : 0 };
}

function cpuPairs(cpu: CpuLimits): [string, string][] {
  const w = cpuWords(cpu);
  return [
    ["cpu_quota", String(w.quota)],
    ["cpu_period", String(w.period)],
    ["nice", String(w.nice)],
    // Every thread of the service confines itself to them as it starts (the library's).
    ...(cpu.cpus ?? []).map((c): [string, string] => ["cpus", String(c)]),
  ];
}
/** After an abort: the library joins its threads within 10 s (a guest stuck in a blocking host call); a little more here. */
const ABORT_WAIT_MS = 12_000;

export interface HttpServiceOptions {
  /** The component's bytes (a binary: the library reads no WAT text). */
  source: Uint8Array;
  /** The container's environment; the service's own variables are taken out before the guest sees it. */
  env: [string, string][];
  args: string[];
  /** Host directory preopened as the guest's "/" (wasi:http's proxy world has no filesystem, a wider component may). */
  rootDir?: string;
  rootReadOnly?: boolean;
  /**
   * Bytes all of the service's stores (a store per request in flight, and the spare ones made
   * ahead) may grow their memories and tables to, together: a request that would need more
   * fails (500).
   */
  memoryLimitBytes?: number;
  /** Guests running at once (default MAX_REQUESTS); the other requests wait. */
  maxRequests?: number;
  /** Executor directory holding the library (/.bunwasi); absent = found on the host. */
  libDir?: string;
  /**
   * The component compiled by this library (`bunwasi_http_compile`), checked by the caller:
   * this node compiled it (docs/ARCHITECTURE.md, "Compiled code we trust"). Mapped instead of
   * compiling; loaded by HttpService.start, so it may be closed once that returned.
   */
  artifact?: string;
  /** Runtime threads serving requests; default: one per CPU. */
  threads?: number;
  /**
   * The network namespace (a path) every socket of the service is made in, its listener and its
   * outgoing requests: the library's threads that make them enter it (native/http-host, `Netns`).
   * Default: this process's.
   */
  netns?: string;
  /** False: every outgoing request of the guest is refused (HttpRequestDenied). Default true. */
  outgoing?: boolean;
  /**
   * False: the library's threads give up the capabilities over files before serving
   * (RunContext.noFileCapabilities). Default true.
   */
  fileCapabilities?: boolean;
  /** The guest's stdout and stderr (the library keeps copies); default: this process's. */
  stdoutFd?: number;
  stderrFd?: number;
  /**
   * CPU limits over all of the service's threads together (a caller without a cgroup per
   * container: the daemon): quota per period in µs, shares as the threads' nice value.
   */
  cpu?: CpuLimits;
  /**
   * The pooling allocator (default on): about 4 TiB of address space reserved per service,
   * which a process serving many (the daemon) cannot afford; BUNWASI_HTTP_POOLING=0 turns it off too.
   */
  pooling?: boolean;
}

/** A bad setting in the container's environment (the run ends with 125). */
export class HttpConfigError extends Error {}

/** Split the container's environment into the service's settings and the guest's variables. */
export function httpSettings(env: [string, string][]): { addr: string; backlog: number; guestEnv: [string, string][] } {
  let addr = DEFAULT_ADDR;
  let backlog = DEFAULT_BACKLOG;
  const guestEnv: [string, string][] = [];
  for (const [k, v] of env) {
    if (k === ADDR_ENV) {
      // Parsed by the library (an IP address and a port: 0.0.0.0:8080, [::]:8080).
      addr = v;
    } else if ((BACKLOG_ENVS as readonly string[]).includes(k)) {
      const n = Number(v);
      if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n > 0x7fffffff) throw new HttpConfigError(`${k}=${v}: want a number`);
      backlog = n;
    } else {
      guestEnv.push([k, v]);
    }
  }
  return { addr, backlog, guestEnv };
}

/** A running service. */
export class HttpService {
  private server: Pointer | null;
  private final: (ReturnType<HttpService["counters"]> & { cpuNs: number }) | undefined;
  private readonly latency: () => HttpLatency;

  private constructor(
    private readonly lib: HttpHostLib,
    server: Pointer,
    /** The address asked for; `port` is the one bound. */
    readonly addr: string,
    readonly port: number,
    /** The component was compiled at start (no usable cache artifact). */
    readonly compiled: boolean,
  ) {
    this.server = server;
    this.latency = latencyReader(lib, server);
  }

  /** Compile or map the component, link it, bind and start serving. Throws on any failure. */
  static start(o: HttpServiceOptions): HttpService {
    const { addr, backlog, guestEnv } = httpSettings(o.env);
    const libPath = requireHttpHost(o.libDir);
    const lib = httpHost(libPath);
    const artifact = o.artifact;
    const pairs: [string, string][] = [
      ["addr", addr],
      ["backlog", String(backlog)],
      ...guestEnv.map(([k, v]): [string, string] => ["env", `${k}=${v}`]),
      ...o.args.map((a): [string, string] => ["arg", a]),
    ];
    if (o.rootDir !== undefined) pairs.push(["root", o.rootDir], ["root_ro", o.rootReadOnly ? "1" : "0"]);
    if (o.stdoutFd !== undefined) pairs.push(["stdout_fd", String(o.stdoutFd)]);
    if (o.stderrFd !== undefined) pairs.push(["stderr_fd", String(o.stderrFd)]);
    if (o.memoryLimitBytes !== undefined) pairs.push(["memory_limit", String(Math.floor(o.memoryLimitBytes))]);
    pairs.push(["max_requests", String(o.maxRequests ?? MAX_REQUESTS)]);
    if (artifact) pairs.push(["artifact", artifact]);
    if (o.threads) pairs.push(["threads", String(o.threads)]);
    if (o.netns !== undefined) pairs.push(["netns", o.netns]);
    if (o.outgoing === false) pairs.push(["outgoing", "0"]);
    if (o.fileCapabilities === false) pairs.push(["file_caps", "0"]);
    if (o.cpu) pairs.push(...cpuPairs(o.cpu));
    // The pooling allocator is on unless BUNWASI_HTTP_POOLING=0 (in the container's env; else
    // in this process's, which the executor's never carries from a container).
    const pooling = o.env.findLast(([k]) => k === "BUNWASI_HTTP_POOLING")?.[1] ?? process.env.BUNWASI_HTTP_POOLING;
    if (pooling === "0" || o.pooling === false) pairs.push(["pooling", "0"]);
    const config = encodeConfig(pairs);
    const server = startHttpServer(lib, config, o.source);
    return new HttpService(lib, server, addr, lib.bunwasi_http_port(server), !artifact);
  }

  /** Requests in flight, open connections, requests received, requests that failed (500), and how long they took. */
  counters(): { inFlight: number; connections: number; requests: number; failed: number; latency: HttpLatency } {
    if (!this.server && this.final) return this.final;
    const s = this.live();
    const c = (i: number) => Number(this.lib.bunwasi_http_counter(s, i));
    return { inFlight: c(0), connections: c(1), requests: c(2), failed: c(3), latency: this.latency() };
  }

  /**
   * What the service holds and has used, for Stats: bytes its stores hold (memories and tables
   * of every request's store, and the spare ones made ahead), its memory limit (undefined:
   * none), CPU time of its threads (ns), and what holding them to the CPU quota did.
   */
  usage(): {
    memoryBytes: number;
    memoryLimit?: number;
    cpuNs: number;
    throttling: { periods: number; throttledPeriods: number; throttledNs: number };
  } {
    if (!this.server)
      return { memoryBytes: 0, cpuNs: this.final?.cpuNs ?? 0, throttling: { periods: 0, throttledPeriods: 0, throttledNs: 0 } };
    const s = this.server;
    const c = (i: number) => this.lib.bunwasi_http_counter(s, i) as number | bigint;
    const limit = BigInt(c(MEMORY_LIMIT));
    return {
      memoryBytes: Number(c(MEMORY_USED)),
      ...(limit === NO_LIMIT ? {} : { memoryLimit: Number(limit) }),
      cpuNs: Number(c(CPU_NS)),
      throttling: { periods: Number(c(CPU_CHECKS)), throttledPeriods: Number(c(CPU_THROTTLED)), throttledNs: Number(c(THROTTLED_NS)) },
    };
  }

  /** Pause (as a frozen process: nothing accepted or answered, connections queue) or resume. */
  pause(on: boolean): void {
    if (this.server) this.lib.bunwasi_http_pause(this.server, on ? 1 : 0);
  }

  /**
   * Moves every thread of the service, and those it starts from now on, to `cpus` (undefined:
   * to `free`, the caller's own CPUs). Throws, saying why, if a thread could not be moved.
   */
  setCpus(cpus: number[] | undefined, free: number[]): void {
    if (!this.server) return;
    // Never empty (bun:ffi has no pointer to an empty buffer); the lengths say what counts.
    const to = Uint32Array.from(cpus?.length ? cpus : [0]);
    const all = Uint32Array.from(free.length ? free : [0]);
    const e = this.lib.bunwasi_http_set_cpus(this.server, ptr(to), cpus?.length ?? 0, ptr(all), free.length);
    if (e !== 0) throw new Error(`cannot move the service's threads to CPUs ${(cpus ?? free).join(",")}: errno ${e}`);
  }

  /** New CPU limits for all of the service's threads (an Update). */
  setCpu(cpu: CpuLimits): void {
    if (!this.server) return;
    const w = cpuWords(cpu);
    this.lib.bunwasi_http_set_cpu(this.server, BigInt(w.quota), BigInt(w.period), w.nice);
  }

  /**
   * A new memory limit for all of the service's stores (undefined: none); refused with
   * MemoryLimitBelowUsage, nothing changed, when they hold more than it now.
   */
  setMemoryLimit(bytes: number | undefined): void {
    if (!this.server) return;
    const limit = bytes === undefined ? NO_LIMIT : BigInt(Math.max(0, Math.floor(bytes)));
    if (this.lib.bunwasi_http_set_memory_limit(this.server, limit) !== 0)
      throw new MemoryLimitBelowUsage(Number(limit), Number(this.lib.bunwasi_http_counter(this.server, MEMORY_USED)));
  }

  /** True once serving has ended (after stop(), or on its own: a listener failure). */
  stopped(): boolean {
    return this.server === null || this.lib.bunwasi_http_state(this.server) === STATE_STOPPED;
  }

  /**
   * Stop accepting and let the requests in flight finish. Resolves true once drained (the
   * library's threads are then joined and freed), false when `graceMs` ran out first or
   * `cut` aborted: the requests still in flight go on until `abort()` (or the process's exit).
   */
  async stop(graceMs: number, cut?: AbortSignal): Promise<boolean> {
    const s = this.server;
    if (!s) return true;
    this.lib.bunwasi_http_stop(s);
    const deadline = performance.now() + graceMs;
    while (!this.stopped()) {
      if (performance.now() >= deadline || cut?.aborted) return false;
      await Bun.sleep(10);
    }
    this.release(s);
    return true;
  }

  /**
   * Hard stop: close the listener and every connection, trap running guests, cancel the
   * rest. Resolves true once the library's threads are joined and the server freed; false
   * if a guest blocked in a host call kept a thread past ABORT_WAIT_MS (the server is then
   * left allocated: freeing it would join that thread).
   */
  async abort(): Promise<boolean> {
    const s = this.server;
    if (!s) return true;
    this.lib.bunwasi_http_abort(s);
    const deadline = performance.now() + ABORT_WAIT_MS;
    while (!this.stopped()) {
      if (performance.now() >= deadline) return false;
      await Bun.sleep(10);
    }
    this.release(s);
    return true;
  }

  /** Free the server once (a stop's loop and an abort may both see it stopped). */
  private release(s: Pointer): void {
    if (this.server !== s) return;
    this.final = { ...this.counters(), cpuNs: Number(this.lib.bunwasi_http_counter(s, CPU_NS)) };
    this.lib.bunwasi_http_free(s);
    this.server = null;
  }

  private live(): Pointer {
    if (!this.server) throw new Error("http service stopped");
    return this.server;
  }
}

/**
 * Grace period: BUNWASI_HTTP_GRACE_MS from the container's env (`env`, from its RunPlan), else
 * from this process's env (a daemon's default), else STOP_GRACE_MS.
 */
export function stopGraceMs(env: [string, string][] = []): number {
  for (const raw of [env.findLast(([k]) => k === "BUNWASI_HTTP_GRACE_MS")?.[1], process.env.BUNWASI_HTTP_GRACE_MS]) {
    const v = Number(raw);
    if (raw !== undefined && raw !== "" && Number.isFinite(v) && v >= 0) return v;
  }
  return STOP_GRACE_MS;
}

/** "SIGTERM" for 15; the number itself for a signal without a name here. */
function signalName(sig: number): string {
  return Object.entries(SIGNALS).find(([, n]) => n === sig)?.[0] ?? `signal ${sig}`;
}

export interface ServeHooks {
  /** Told the running service (tests watch its counters). */
  onServing?: (svc: HttpService) => void;
  /**
   * Aborted during the drain (a second kill signal), or before it (the daemon's SIGKILL): no
   * more draining, the server is aborted (nothing of it left), the run ends with 128 + its reason.
   */
  stopNow?: AbortSignal;
}

/**
 * Serve until `signal` aborts, then drain. Resolves with the exit code: 0 after a graceful
 * stop, 128+s when in-flight requests outlived the grace period (s: the signal that began
 * the stop) or when `hooks.stopNow` cut the drain short (s: the signal that cut it), 125 when
 * the service could not start (message on stderr) or stopped on its own.
 */
export async function serveHttp(
  o: HttpServiceOptions,
  signal: AbortSignal | undefined,
  report: (message: string) => void,
  hooks: ServeHooks = {},
): Promise<{ code: number; stats: { startMs: number; requests: number; failedRequests: number; compiled: boolean } }> {
  const t0 = performance.now();
  let svc: HttpService;
  try {
    svc = HttpService.start(o);
  } catch (e) {
    report(`bunwasi: wasi:http: ${e instanceof Error ? e.message : String(e)}\n`);
    return { code: EXIT_ENGINE_ERROR, stats: { startMs: 0, requests: 0, failedRequests: 0, compiled: false } };
  }
  const startMs = performance.now() - t0;
  hooks.onServing?.(svc);
  const origin = svc.compiled ? "compiled at start" : "from the compile cache";
  report(`bunwasi: serving wasi:http on http://${svc.addr.replace(/:\d+$/, `:${svc.port}`)}/ (${origin})\n`);
  const on = (sig: AbortSignal | undefined) =>
    new Promise<void>((resolve) => {
      if (sig?.aborted) resolve();
      else sig?.addEventListener("abort", () => resolve(), { once: true });
    });
  const now = hooks.stopNow;
  const aborted = Promise.race([on(signal), on(now)]);
  // The library's server ends on its own only if its listener fails; look now and then.
  let watch: ReturnType<typeof setInterval> | undefined;
  const ended = new Promise<void>((resolve) => {
    watch = setInterval(() => svc.stopped() && resolve(), 500);
  });
  await Promise.race([aborted, ended]);
  clearInterval(watch);
  const stats = () => {
    const c = svc.counters();
    return { startMs, requests: c.requests, failedRequests: c.failed, compiled: svc.compiled };
  };
  // Cut: the listener, every connection and every guest end now, and nothing of the service
  // is left once this resolves (a process that lives on, the daemon, needs that).
  const cutShort = async (sig: AbortSignal, what: string) => {
    const inFlight = svc.counters().inFlight;
    if (!(await svc.abort())) report("bunwasi: wasi:http: a guest did not end after the abort; its server is left running\n");
    report(`bunwasi: wasi:http: ${what}: ${inFlight} request(s) cut short\n`);
    return { code: 128 + signalNumber(sig.reason), stats: stats() };
  };
  // Stopped at once (the daemon's SIGKILL as the first signal): no drain.
  if (now?.aborted) return await cutShort(now, signalName(signalNumber(now.reason)));
  if (!signal?.aborted) {
    await svc.stop(0);
    await svc.abort();
    report("bunwasi: wasi:http: the server stopped on its own\n");
    return { code: EXIT_ENGINE_ERROR, stats: stats() };
  }
  const first = signalNumber(signal.reason);
  const graceMs = stopGraceMs(o.env);
  // Said once the listener is closed, so that whoever reads the log knows what a second signal does.
  const draining = svc.stop(graceMs, now);
  report(
    `bunwasi: wasi:http: ${signalName(first)}: no new connections; draining ${svc.counters().inFlight} request(s) for up to ${graceMs} ms (a second signal ends it at once)\n`,
  );
  // Woken at once by a second signal rather than at the drain loop's next look.
  const cut = new Promise<boolean>((resolve) => {
    if (now?.aborted) resolve(false);
    else now?.addEventListener("abort", () => resolve(false), { once: true });
  });
  if (await Promise.race([draining, cut])) return { code: 0, stats: stats() };
  if (now?.aborted) return await cutShort(now, `${signalName(signalNumber(now.reason))} during the drain`);
  report(`bunwasi: wasi:http: ${svc.counters().inFlight} request(s) still in flight after the grace period\n`);
  // Nothing of the service may outlive the run in a process that lives on (the daemon).
  await svc.abort();
  return { code: 128 + first, stats: stats() };
}

/**
 * A running service as its caller controls a run (RunContext.onControl): pause and resume (as
 * runc's freezer: requests wait, connections queue), CPU and memory limits changed live (an
 * Update), and its figures for Stats: the memory its stores hold, the CPU time of its threads.
 */
export function serviceControl(svc: HttpService): RunControl {
  return {
    pause: () => svc.pause(true),
    resume: () => svc.pause(false),
    setCpu: (cpu) => svc.setCpu(cpu),
    setCpus: (cpus) => svc.setCpus(cpus, callerCpus()),
    cpuThrottling: () => svc.usage().throttling,
    memoryBytes: async () => svc.usage().memoryBytes,
    setMemoryLimit: async (bytes) => svc.setMemoryLimit(bytes),
    cpuNs: () => svc.usage().cpuNs,
  };
}
