// The one boundary between the shim and a wasm engine (see ./README.md). The shim, the
// bundle code, the compile cache and the executor reach an engine only through `Engine`;
// an engine's own folder (e.g. ./wasmtime/) is the only place that names it.
//
// The object is cheap to import: `start` and `delete` run in the same binary and must not
// pay for an engine they never use. Anything heavy (a native library, threads) is loaded by
// `load()` or `compiler.compile()`, the only two calls that need it.

/** Where a stdio stream of the module goes. */
export type StdioSpec =
  | { kind: "inherit" } // the running process's own fd 0/1/2
  | { kind: "path"; path: string } // a file or fifo path (stdout/stderr: created/truncated)
  | { kind: "fd"; fd: number }; // an fd of this process (opened as /proc/self/fd/N)

/**
 * What an engine may read of the container's OCI spec when it decides. Structural, so the
 * engine layer does not depend on the OCI layer above it (src/oci/spec.ts's Spec is one).
 */
export interface ContainerSpec {
  readonly process?: { readonly args?: readonly string[]; readonly env?: readonly string[]; readonly cwd?: string };
  readonly annotations?: Readonly<Record<string, string>>;
}

/** The container's entrypoint (process.args[0]) as found on the host. */
export interface Entrypoint {
  /** Path inside the container (symlinks resolved). */
  path: string;
  /** The same file on the host: under the rootfs, or under a volume's source. */
  host: string;
  /** The export named by "module.wasm#export"; absent = the engine's default. */
  entry?: string;
  /** The file's first bytes (up to 4 KiB), for sniffing. */
  head: Uint8Array;
}

/** Ahead-of-time compilation, used by the compile cache (../oci/precompile.ts). */
export interface Compiler {
  /**
   * Cache key of `source` as this engine would compile it (module digest, engine version,
   * settings). Cheap: no engine is loaded to compute it, so a cache hit costs a hash, and the
   * hash is taken in slices, leaving the caller's event loop free between them.
   */
  cacheKey(source: Uint8Array): Promise<string>;
  /** Compile `source` (off the calling thread) into the artifact `Runner.run` accepts from the cache. */
  compile(source: Uint8Array): Promise<Uint8Array>;
}

/** A file the executor needs, shipped into its read-only directory (/.bunwasi). */
export interface ExecutorFile {
  /** File name inside the directory. */
  name: string;
  /** Host path to hard-link (or copy) from. */
  source: string;
  /** A shared object: the libraries it links against (`ldd`) are shipped too. */
  sharedObject?: boolean;
}

/** What the executor process needs from the engine beyond the shim binary itself. */
export interface ExecutorNeeds {
  files: ExecutorFile[];
  /** Engine options the executor passes to `load()` (`--engine-opt key=value`). */
  options?: Record<string, string>;
}

export interface LoadOptions {
  /**
   * The directory holding `executor().files`: /.bunwasi inside a container. Absent = the
   * engine finds its files on the host itself (in-process use, tests).
   */
  dir?: string;
  /** `executor().options`, as given. */
  options?: Record<string, string>;
  /**
   * The node's compile cache (./cache.ts, its key `<cacheDir>.key`): a run maps a module's
   * artifact from it only when the entry checks (this node compiled it), and writes its
   * compile back on a miss. Only for a process trusted with the node's key (the shared-mode
   * daemon); the executor gets RunContext.compiled instead.
   */
  cacheDir?: string;
  /** After a kill, how long a module blocked in a host call may take before run() resolves anyway. */
  killGraceMs?: number;
  /** The caller will run on its own thread (Runner.runHere): start no thread ahead of time. */
  thisThread?: boolean;
  /**
   * Every run's threads (and the threads the engine starts from them) give up the capabilities
   * that override file permissions (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH,
   * CAP_FOWNER, CAP_FSETID) before the module runs. For a process that is root for many
   * containers (the shared-mode daemon), each module's view idmapped to its container's user
   * (../linux/idmap.ts): the kernel then checks its file access by that mount and the mode bits
   * alone. A setting of the whole Runner, not of a run: an engine's worker threads (libwasmtime's
   * blocking pool) serve every run and keep the capabilities of the run that started them.
   */
  noFileCapabilities?: boolean;
  /**
   * Runs that can share a thread do (a caller that holds many at once: the shared-mode daemon):
   * an engine may then run many modules on each of a few threads rather than one thread each.
   */
  pools?: boolean;
  /**
   * Told how many threads the engine started for runs (a run's own, a pool's) are alive, now
   * and at each start and end: what an ended one held is free only then, so a caller that
   * gives memory back (the daemon) knows when.
   */
  onRunThreads?: (alive: number) => void;
}

export interface RunContext {
  /** Module bytes (wasm binary or WAT text) ... */
  module?: Uint8Array;
  /** ... or a host path to read them from. One of module / modulePath is required. */
  modulePath?: string;
  /**
   * The module's compiled artifact (what this engine's Compiler made of it), which the caller
   * checked this node compiled (the compile cache's MAC): mapped instead of compiling, the
   * source being the fallback should it not load. Native code: only a trusted caller names one.
   */
  compiled?: string;
  /** argv as the module sees it (args[0] is the program name). */
  args: string[];
  /** Environment, "KEY=VALUE" entries (as in an OCI spec) or a record. */
  env: string[] | Record<string, string>;
  /** Host directory preopened as the guest's "/" (the container root). Omit for no filesystem. */
  rootDir?: string;
  /** Preopen root read-only (default false: writable). */
  rootReadOnly?: boolean;
  /** More host directories preopened at guest paths (a container's volumes), after the root. */
  preopens?: { hostPath: string; guestPath: string; readOnly?: boolean }[];
  /** Working directory inside the guest (informational: WASI p1 programs start at "/"). */
  cwd?: string;
  stdin?: StdioSpec;
  stdout?: StdioSpec;
  stderr?: StdioSpec;
  /**
   * May serve a wasi:http component (one exporting `wasi:http/incoming-handler`) on the
   * network: only a caller that owns its network namespace (the normal-mode executor).
   * Such a run lasts until `signal` aborts, then drains (docs/running.md, "wasi:http services").
   */
  httpServices?: boolean;
  /**
   * Serve a wasi:http component as a process that serves many and lives in a network namespace
   * of its own (the shared-mode daemon). Every socket of the service, its listener and its
   * outgoing requests, is made in `netns` (a network namespace's path: the pod's) by threads of
   * the engine that enter it, never by the caller's; absent, in this process's. `outgoing:
   * false` refuses the guest's outgoing requests (the caller has no network to give them).
   * Allows services as `httpServices` does.
   */
  httpNetwork?: { netns?: string; outgoing?: boolean };
  /** Export to call; default "_start" (from "module.wasm#func"). */
  entry?: string;
  /** Max bytes all of the module's linear memories and tables may take together; undefined = unlimited. */
  memoryLimitBytes?: number;
  /**
   * The spec's CPU limits (linux.resources.cpu: quota and period in µs, shares a weight), for
   * a caller whose runs share one process (the shared-mode daemon): the engine holds the run's
   * thread to them. The executor does not pass them: its cgroup does that.
   */
  cpu?: CpuLimits;
  /**
   * The most handles (files, directories, stdio) the module may hold open at once; one more open
   * fails with EMFILE. undefined = no cap of the engine's own.
   */
  maxOpenFiles?: number;
  /**
   * stdin, stdout and stderr are a terminal the caller made and gives by path or fd (the
   * shared-mode daemon's pty): the module's fd_fdstat_get says so for fds 0–2 (a character device
   * without seek or tell), as isatty() asks. A process that inherits its terminal (the executor)
   * need not say it.
   */
  terminal?: boolean;
  /**
   * Kill: abort = stop the module promptly. `signal.reason` may be a signal number (e.g. 15)
   * or name ("SIGTERM"); the run then ends with 128+signal. Default reason: SIGKILL (9).
   */
  signal?: AbortSignal;
  /**
   * A service's drain (see `httpServices`), under way since `signal` aborted, is cut short
   * when this aborts too (aborted first, there is no drain at all): the run ends with 128 + its
   * reason, requests in flight cut, once nothing of the service is left (threads, sockets),
   * which a caller whose process lives on (the daemon) needs. The executor aborts it on a
   * second kill signal; the shared-mode daemon on SIGKILL, a second signal or a forced delete.
   * Other runs ignore it.
   */
  stopNow?: AbortSignal;
  /**
   * Told, once the run is under way, how to pause and resume it (engines that can: the
   * module stops at its next interrupt check and waits; a kill still ends it). Absent from
   * engines that cannot.
   */
  onControl?: (control: RunControl) => void;
  /**
   * Told how to say that stdin (a path the caller feeds, such as the daemon's relay fifo) has
   * news: the caller calls `news` each time it wrote to it or closed it (`ended`: nothing more
   * will come once what is in it is read). An engine that reads stdin without blocking (the run
   * pools) waits for that rather than looking again and again.
   */
  watchStdin?: (news: (ended: boolean) => void) => void;
  /**
   * Told, once a served module (isService) serves, how to read its counters since it began:
   * requests received, requests answered 500 (the guest failed), requests being handled now,
   * open connections (the shared-mode daemon's metrics), and, from an engine that times them,
   * how long its requests took (from a request's head read to its response body's end, or its
   * failure) as a histogram: bucket upper bounds in seconds (ascending), a count per bucket (not
   * cumulative; one more than the bounds, for the requests above the last) and their sum in
   * seconds. Other runs never call it.
   */
  onHttpService?: (
    counters: () => {
      requests: number;
      failed: number;
      inFlight: number;
      connections: number;
      latency?: { bounds: readonly number[]; counts: readonly number[]; sum: number };
    },
  ) => void;
}

/** What RunContext.onHttpService reads. */
export type HttpServiceCounters = ReturnType<Parameters<NonNullable<RunContext["onHttpService"]>>[0]>;

/** How native signal handlers kill a run on the calling thread (Runner.runHere). */
export interface ThreadKill {
  /** [0]: the kill signal once one came (0 before), written by the handler; read it with Atomics.load. */
  readonly word: Int32Array;
  /** Sleeps `ns` unless a kill comes first; true if killed. */
  sleep(ns: bigint): boolean;
  /** Native `void fn(void *arg)` a kill calls to interrupt running code; it must be async-signal-safe. */
  setInterrupt(fn: number, arg: number): void;
}

/** linux.resources.cpu as a run obeys it; a quota <= 0 or absent is none. */
export interface CpuLimits {
  quota?: number;
  period?: number;
  shares?: number;
  /**
   * The CPUs the run's thread must stay on (the container's cpuset, cut to the caller's CPUs:
   * src/linux/cpuset.ts); absent: wherever the caller's threads may run. A run confined so
   * gets a thread of its own, never a pool's.
   */
  cpus?: number[];
}

/** Pause and resume one run (RunContext.onControl). */
export interface RunControl {
  pause(): void;
  resume(): void;
  /** New CPU limits for the running module (Update), applied at its next interrupt check. */
  setCpu?(cpu: CpuLimits): void;
  /**
   * Moves the run's thread to `cpus` (undefined: back to every CPU the caller's main thread may
   * use), at once: every thread of the run (a wasi:http service's too). Present only where the
   * run has threads of its own to move: a pooled run shares its thread with others and cannot be
   * confined alone.
   */
  setCpus?(cpus: number[] | undefined): void;
  /** What holding the run to its CPU quota did so far, as a cgroup's cpu.stat counts it. */
  cpuThrottling?(): { periods: number; throttledPeriods: number; throttledNs: number };
  /** The Linux thread id running the module, once known (for its CPU time); absent if the engine cannot tell. */
  threadId?(): number | undefined;
  /** The module's linear memory in bytes, now (for Stats); undefined while the engine cannot tell (not instantiated yet). */
  memoryBytes?(): Promise<number | undefined>;
  /**
   * A new memory limit for the running module (Update; undefined: none): what its store may
   * grow to from then on. Rejects with MemoryLimitBelowUsage, and changes nothing, when the
   * module already holds more than the limit would let it (memory cannot be taken back from
   * a module); with an EngineError-like Error when the module's shape cannot fit it at all.
   */
  setMemoryLimit?(bytes: number | undefined): Promise<void>;
  /**
   * CPU time the run has used (ns), where no thread the caller can name (threadId) is the
   * run's alone: a wasi:http service's request threads, a run pool's thread (it counts the
   * run's slices).
   */
  cpuNs?(): number;
}

/** RunControl.setMemoryLimit: the run already holds `usage` bytes, more than `limit` allows. */
export class MemoryLimitBelowUsage extends Error {
  constructor(
    readonly limit: number,
    readonly usage: number,
  ) {
    super(`unable to set memory limit to ${limit} (current usage: ${usage}): memory a module holds cannot be taken back from it`);
  }
}

/** How a run ended: an exit code (README "Exit codes") and the engine's timings. */
export interface RunResult {
  code: number;
  /**
   * The run was a service (served until stopped): its code is how the stop went (0 drained,
   * 128+s cut), to be kept as the exit status even though it was killed.
   */
  service?: boolean;
  stats: Record<string, number | boolean | undefined>;
}

/**
 * A loaded engine: instantiates and runs modules in this process, each on a thread of its
 * own so the caller's thread stays free to kill it. The executor runs one; a shared-mode
 * daemon would run many at once on one Runner.
 */
export interface Runner {
  run(ctx: RunContext): Promise<RunResult>;
  /**
   * Runs on the calling thread, which stays inside the engine until the module ends: no
   * second thread, no second JS VM. For a process with nothing else to do (the executor).
   * No JavaScript runs meanwhile, so kills come through `kill` (native signal handlers,
   * ./kill-signals.ts), not `ctx.signal`. Absent from engines that cannot.
   */
  runHere?(ctx: Omit<RunContext, "signal" | "onControl">, kill: ThreadKill): Promise<RunResult>;
  /** Free the engine; only once no run is in flight. */
  close(): void;
}

export interface Engine {
  /** e.g. the engine's name; part of logs and of cache keys. */
  readonly name: string;
  /** Does this engine run that entrypoint? Sniffs `ep.head` (e.g. "\0asm", WAT text). */
  canHandle(ep: Entrypoint, spec: ContainerSpec): boolean;
  /** Ahead-of-time compiler for the compile cache; absent = every start compiles. */
  readonly compiler?: Compiler;
  /** Files (and options) the executor needs in its directory. */
  executor(): ExecutorNeeds;
  /** Load the engine (native library, threads) and return a Runner. */
  load(opts?: LoadOptions): Promise<Runner>;
  /**
   * A module this engine serves until stopped rather than runs to an end (wasmtime: a
   * wasi:http component). Cheap, no engine loaded. The executor handles such a run's signals
   * in JavaScript and passes them as `RunContext.signal`, so that a stop can drain.
   */
  isService?(module: Uint8Array): boolean;
}

// Exit statuses and signal names live in ../common (one home for the whole shim).
export { EXIT_ENGINE_ERROR, EXIT_TRAP } from "../common/constants.ts";
export { signalNumber } from "../common/signals.ts";

export function isWasmBinary(b: Uint8Array): boolean {
  return b.length >= 4 && b[0] === 0 && b[1] === 0x61 && b[2] === 0x73 && b[3] === 0x6d;
}

/** Heuristic: text starting (after whitespace/comments) with "(module". */
export function isWat(b: Uint8Array): boolean {
  return watHead(b).startsWith("(module");
}

/**
 * A component binary: the wasm magic followed by the component encoding's version/layer
 * word (layer 1 in bytes 6-7; a core module has version 1 and layer 0 there).
 */
export function isComponentBinary(b: Uint8Array): boolean {
  return isWasmBinary(b) && b.length >= 8 && b[6] === 1 && b[7] === 0;
}

/** Heuristic: text starting (after whitespace/comments) with "(component". */
export function isWatComponent(b: Uint8Array): boolean {
  return watHead(b).startsWith("(component");
}

/** A component, as a binary or as WAT text. */
export function isComponent(b: Uint8Array): boolean {
  return isComponentBinary(b) || isWatComponent(b);
}

function watHead(b: Uint8Array): string {
  const head = new TextDecoder().decode(b.subarray(0, 4096));
  return head.replace(/^(\s|;;[^\n]*\n|\(;[\s\S]*?;\))*/, "");
}
