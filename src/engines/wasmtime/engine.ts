// WasmtimeEngine: runs WASI preview 1 modules and WASI preview 2 components (./component.ts)
// in libwasmtime through bun:ffi.
//
// The wasm_engine_t lives for the life of the WasmtimeEngine and is shared by every run
// (compiled code is tied to it). Each run happens in its own Bun Worker (./worker.ts):
// the main thread stays free to handle signals and interrupt the module with
// wasmtime_engine_increment_epoch, which is safe from any thread.

import type { Pointer } from "bun:ffi";
import { dirname } from "node:path";
import { workerScript } from "../../common/compiled.ts";
import { KILL_GRACE_MS } from "../../common/constants.ts";
import { type CheckedEntry, CompileCache } from "../cache.ts";
import {
  EXIT_ENGINE_ERROR,
  isComponentBinary,
  isWasmBinary,
  isWat,
  isWatComponent,
  MemoryLimitBelowUsage,
  type RunContext,
  type RunResult,
  type StdioSpec,
  signalNumber,
  type ThreadKill,
} from "../engine.ts";
import { ModuleFileError, readModulePath, readModulePathSync } from "../module-file.ts";
import { compileComponent, serializeComponent } from "./component.ts";
import { ConfinedThreads, confineThread } from "./cpu-confine.ts";
import { CPU_TICK_MS } from "./cpu-throttle.ts";
import { check, readPtr, takeByteVec, type WasmtimeLib, wasmtime, wat2wasm } from "./ffi.ts";
import { isHttpService } from "./http/exports.ts";
import { findHttpHost, httpCacheKeyInSlices } from "./http/library.ts";
import { configFlags, findLibwasmtime, libwasmtimeVersion, OPT_LEVEL } from "./library.ts";
import { MemoryAsks } from "./memory-asks.ts";
import { needsFileGuard, poolable, poolLibPath, RunPools } from "./pool.ts";
import type { ModuleKind, RunRequest, RunStats, WorkerMessage } from "./protocol.ts";
import {
  BLOCKED,
  CPU_NS,
  MEM_ANSWER,
  MEM_ASK,
  MEM_PAGES,
  newRunWords,
  publishedMemory,
  setCpuWords,
  setMemoryLimitWords,
  throttling,
} from "./run-atomics.ts";
import { countRunThread, runThreadIs, watchRunThreads } from "./run-threads.ts";
import { RUN_WORKER_SCRIPT, WASI_SHADOWS_SCRIPT } from "./scripts.ts";
import { storeLimits } from "./store.ts";
import { type WasmShape, wasmShape } from "./wasm-shape.ts";

/**
 * How long Stats waits for a run to publish its memory after the epoch bump. A thread in
 * wasm answers in microseconds; only one blocked in a host call we do not own (a read)
 * runs into this, and then its last figure is reported.
 */
const MEMORY_ASK_MS = 10;
/**
 * After a kill, how often the epoch is bumped again until the run's thread has ended. One
 * bump can be absorbed: when it lands while the run's deadline callback is running (another
 * bump, a Stats ask, came just before), the callback may have read the kill word before it
 * was set, and wasmtime then sets the next deadline one tick past the epoch it reads after
 * the callback returns, which already counts this bump. Seen in a unit test under CI load:
 * a busy module never stopped.
 */
const KILL_REBUMP_MS = 25;
/** Least time between two collections of a run on the executor's own thread (executeHere). */
const HERE_COLLECT_MS = 10_000;

export interface WasmtimeEngineOptions {
  /** Path of libwasmtime.so; default: found by findLibwasmtime(). */
  libPath?: string;
  /** Directory of the node's compile cache (its key `<cacheDir>.key`); default: no cache. */
  cacheDir?: string;
  cacheMaxBytes?: number;
  /** Cranelift opt level: 0 none, 1 speed (default), 2 speed_and_size. */
  optLevel?: 0 | 1 | 2;
  /** After an abort, how long to wait for the module to stop before giving up on it (ms). */
  killGraceMs?: number;
  /** Scripts whose default export is a HostFunctions (../host.ts), linked into every run. */
  hostModules?: string[];
  /** Every run drops the capabilities over files first (LoadOptions.noFileCapabilities). */
  noFileCapabilities?: boolean;
  /** Core modules run on a few shared threads, many each (./pool.ts), where they can. */
  pools?: boolean;
  /** LoadOptions.onRunThreads. */
  onRunThreads?: (alive: number) => void;
}

/** `module` is wasmtime's serialized form (trusted caller only): of a component when `precompiledComponent`. */
export interface Precompiled {
  precompiled?: boolean;
  precompiledComponent?: boolean;
}

/** What a source is: binary or WAT text, core module or component; undefined = neither. */
function sourceKind(b: Uint8Array): { kind: "wasm" | "wat"; component: boolean } | undefined {
  if (isWasmBinary(b)) return { kind: "wasm", component: isComponentBinary(b) };
  if (isWat(b)) return { kind: "wat", component: false };
  if (isWatComponent(b)) return { kind: "wat", component: true };
  return undefined;
}

/** The Runner behind the `wasmtime` Engine (./index.ts), usable on its own in-process. */
export class WasmtimeEngine {
  readonly name = "wasmtime";
  readonly libPath: string;
  readonly version: string;
  readonly cache: CompileCache | undefined;
  /** Timings of the most recent run (for benchmarks and logs). */
  lastStats: RunStats | undefined;
  private readonly lib: WasmtimeLib;
  private engine: Pointer | null;
  private readonly optLevel: number;
  private readonly killGraceMs: number;
  private readonly hostModules: string[];
  private readonly noFileCapabilities: boolean;
  /** Stats' asks for a fresh memory figure, one epoch bump per gathering (./memory-asks.ts). */
  private readonly memoryAsks = new MemoryAsks(() => this.incrementEpoch());
  /** The runs with a CPU quota: while there is one, the epoch ticks every CPU_TICK_MS (./cpu-throttle.ts). */
  private readonly quotaRuns = new Set<Int32Array>();
  private cpuTicker: ReturnType<typeof setInterval> | undefined;
  /** The threads of runs confined to a cpuset, and the shared threads kept off it (./cpu-confine.ts). */
  private readonly confined = new ConfinedThreads();
  /** The run pools, where the engine has them and their native library is built. */
  private readonly pools: RunPools | undefined;

  constructor(opts: WasmtimeEngineOptions = {}) {
    const { path, lib } = wasmtime(opts.libPath ?? findLibwasmtime());
    this.lib = lib;
    this.libPath = path;
    this.version = libwasmtimeVersion(path);
    this.optLevel = opts.optLevel ?? OPT_LEVEL;
    this.hostModules = opts.hostModules ?? [];
    this.killGraceMs = opts.killGraceMs ?? KILL_GRACE_MS;
    this.noFileCapabilities = !!opts.noFileCapabilities;
    const config = lib.wasm_config_new() as Pointer;
    lib.wasmtime_config_epoch_interruption_set(config, true);
    lib.wasmtime_config_cranelift_opt_level_set(config, this.optLevel);
    this.engine = lib.wasm_engine_new_with_config(config) as Pointer; // takes ownership of config
    if (!this.engine) throw new Error("wasm_engine_new_with_config failed");
    this.cache = opts.cacheDir ? new CompileCache({ dir: opts.cacheDir, maxBytes: opts.cacheMaxBytes }) : undefined;
    const poolLib = opts.pools ? poolLibPath() : undefined;
    if (opts.onRunThreads) watchRunThreads(opts.onRunThreads);
    this.pools = poolLib ? new RunPools(this.libPath, poolLib, this.noFileCapabilities) : undefined;
  }

  /** Config flags that change compiled code (part of the cache key). */
  get configFlags(): string {
    return configFlags(this.optLevel);
  }

  /** The wasm_engine_t* as a number (what a Worker needs). */
  get enginePointer(): number {
    if (!this.engine) throw new Error("engine closed");
    return this.engine;
  }

  /** Compile to wasmtime's serialized form (an ELF image for this engine's config+version). */
  precompile(module: Uint8Array): Uint8Array {
    const lib = this.lib;
    const component = sourceKind(module);
    if (component?.component) {
      const c = compileComponent(lib, this.enginePointer as Pointer, module, component.kind);
      try {
        return serializeComponent(lib, c);
      } finally {
        lib.wasmtime_component_delete(c);
      }
    }
    const wasm = !isWasmBinary(module) && isWat(module) ? wat2wasm(lib, module) : module;
    const out = new BigUint64Array(1);
    check(lib, lib.wasmtime_module_new(this.enginePointer as Pointer, wasm, wasm.length, out), "compile");
    const mod = readPtr(out) as Pointer;
    try {
      return takeByteVec(lib, "serialize", (vec) => lib.wasmtime_module_serialize(mod, vec));
    } finally {
      lib.wasmtime_module_delete(mod);
    }
  }

  /** Interrupt every module running on this engine that has been marked killed. */
  incrementEpoch(): void {
    if (this.engine) this.lib.wasmtime_engine_increment_epoch(this.engine);
  }

  /** Run to completion; resolves with the exit code (README "Exit codes"). */
  async run(ctx: RunContext & Precompiled): Promise<number> {
    const r = await this.execute(ctx);
    this.lastStats = r.stats;
    return r.code;
  }

  /** Run to completion on a Worker; resolves with the exit code and this run's timings. */
  async execute(ctx: RunContext & Precompiled): Promise<RunResult & { stats: RunStats }> {
    const prepared = await this.request(ctx);
    if ("early" in prepared) return prepared.early;
    const { req, cacheKey, cacheHit, loaded } = prepared;
    const kill = new Int32Array(req.kill);
    // A run confined to a cpuset keeps a thread of its own: a pool's thread serves many runs,
    // and confining it would confine them all (src/linux/cpuset.ts).
    if (this.pools && ctx.onControl && !req.cpus && poolable(req, prepared.imports)) {
      if (needsFileGuard(prepared.imports)) req.fileGuard = true;
      return this.executePooled(this.pools, ctx, req, cacheKey, cacheHit, loaded);
    }
    if (ctx.cpu) {
      setCpuWords(kill, ctx.cpu);
      this.holdToQuota(kill, (ctx.cpu.quota ?? 0) > 0);
    }
    const worker = takeWorker();
    const confinedStart = req.cpus ? this.confined.start() : undefined;
    return await new Promise<RunResult & { stats: RunStats }>((resolve) => {
      let done = false;
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      let stats: RunStats = { instantiateMs: 0, runMs: 0, cacheHit };
      let cacheWrite: Promise<void> | undefined;
      // `threadOver`: the thread has posted its exit (its store is deleted) or failed. Only
      // then is it terminated: a thread terminated while still in the run would never reach
      // the run's `finally`, and its store (linear memory, WASI fds) would leak. The grace
      // timer reports the exit early but leaves the thread to end on its own, once the host
      // call it is blocked in returns.
      let rebump: ReturnType<typeof setInterval> | undefined;
      const finish = (code: number, threadOver = true) => {
        if (threadOver) {
          worker.terminate();
          clearInterval(rebump);
          loaded();
          if (confinedStart || movedTo) {
            confinedStart?.(undefined);
            this.confined.end(tid);
          }
        }
        this.holdToQuota(kill, false);
        if (done) return;
        done = true;
        if (graceTimer) clearTimeout(graceTimer);
        ctx.signal?.removeEventListener("abort", onAbort);
        const result = { code, stats: { ...stats } };
        if (cacheWrite) void cacheWrite.then(() => resolve(result));
        else resolve(result);
      };
      const onAbort = () => {
        const sig = signalNumber(ctx.signal?.reason);
        Atomics.store(kill, 0, sig);
        // Wakes a module asleep in our poll_oneoff (./interruptible.ts), or paused ...
        Atomics.notify(kill, 0);
        Atomics.notify(kill, 1);
        // ... and interrupts one running wasm, bumping again until its thread is over.
        this.incrementEpoch();
        rebump ??= setInterval(() => this.incrementEpoch(), KILL_REBUMP_MS);
        // A module blocked in a host call (sleep, read on a fifo) only notices at its next
        // wasm instruction; don't wait for ever.
        graceTimer = setTimeout(() => finish(128 + sig, false), this.killGraceMs);
      };
      worker.onmessage = (ev: MessageEvent<WorkerMessage>) => {
        const m = ev.data;
        if (m.type === "thread") {
          tid = m.tid;
          runThreadIs(worker, m.tid);
          confinedStart?.(m.tid);
          if (cpus && !confinedStart) {
            movedTo = true;
            this.confined.hold(m.tid);
          }
          // Moved (Update) after the request went: the thread is known now.
          if (cpus !== req.cpus) {
            try {
              confineThread(m.tid, cpus);
            } catch (e) {
              writeErr(ctx.stderr, `bunwasi: ${e instanceof Error ? e.message : String(e)}\n`);
            }
          }
        } else if (m.type === "serialized") {
          // Best effort, and written asynchronously (a daemon serves other pods meanwhile);
          // the run's answer waits for it, since an executor exits once it has that answer.
          cacheWrite = this.cachePut(cacheKey, m.bytes);
        } else if (m.type === "exit") {
          stats = { ...m.stats, cacheHit };
          finish(m.code);
        }
      };
      worker.onerror = (ev) => {
        // After an early (grace) exit the container's stdio may be gone: say nothing then.
        if (!done) writeErr(ctx.stderr, `bunwasi: worker failed: ${ev.message}\n`);
        finish(EXIT_ENGINE_ERROR);
      };
      let tid: number | undefined;
      let cpus = req.cpus;
      /** Confined by an Update (setCpus), having started unconfined. */
      let movedTo = false;
      ctx.onControl?.({
        threadId: () => tid,
        setCpus: (next) => {
          if (done) return;
          cpus = next;
          if (tid === undefined) return;
          confineThread(tid, next);
          if (next && !confinedStart) {
            movedTo = true;
            this.confined.hold(tid);
          }
        },
        // Paused at its next interrupt check (the epoch is bumped so that comes at once).
        pause: () => {
          Atomics.store(kill, 1, 1);
          this.incrementEpoch();
        },
        resume: () => {
          Atomics.store(kill, 1, 0);
          Atomics.notify(kill, 1);
        },
        memoryBytes: () => this.askMemory(kill),
        setCpu: (cpu) => {
          if (done) return;
          setCpuWords(kill, cpu);
          this.holdToQuota(kill, (cpu.quota ?? 0) > 0);
          // Read at the next callback: now, for a module busy in wasm (shares change its nice value).
          this.incrementEpoch();
        },
        cpuThrottling: () => throttling(req.kill),
        setMemoryLimit: (bytes) => this.setMemoryLimit(req, bytes, () => done),
      });
      if (ctx.signal?.aborted) onAbort();
      else ctx.signal?.addEventListener("abort", onAbort, { once: true });
      worker.postMessage(req);
    });
  }

  /**
   * Runs `req` on a pool (./pool.ts): the same controls as a run of its own, through the same
   * words; a kill, a resume and stdin's news wake the run on its pool, where a thread of its
   * own would be notified. The epoch ticks while it lasts (holdToQuota), so that a busy module
   * yields its pool to the others at each tick.
   */
  private executePooled(
    pools: RunPools,
    ctx: RunContext & Precompiled,
    req: RunRequest,
    cacheKey: string | undefined,
    cacheHit: boolean,
    loaded: () => void,
  ): Promise<RunResult & { stats: RunStats }> {
    const kill = new Int32Array(req.kill);
    const big = new BigInt64Array(req.kill);
    if (ctx.watchStdin) req.stdinNews = true;
    if (ctx.cpu) setCpuWords(kill, ctx.cpu);
    this.holdToQuota(kill, true);
    return new Promise((resolve) => {
      let cacheWrite: Promise<void> | undefined;
      let done = false;
      const onAbort = () => {
        Atomics.store(kill, 0, signalNumber(ctx.signal?.reason));
        this.incrementEpoch();
        handle.wake();
      };
      const handle = pools.run(req, (m) => {
        if (m.type === "serialized") cacheWrite = this.cachePut(cacheKey, m.bytes);
        else if (m.type === "exit") {
          done = true;
          loaded();
          this.holdToQuota(kill, false);
          ctx.signal?.removeEventListener("abort", onAbort);
          const result = { code: m.code, stats: { ...m.stats, cacheHit, pooled: true } };
          if (cacheWrite) void cacheWrite.then(() => resolve(result));
          else resolve(result);
        }
      });
      ctx.watchStdin?.((ended) => {
        if (!done) handle.wake(ended ? "ended" : "news");
      });
      ctx.onControl?.({
        pause: () => {
          Atomics.store(kill, 1, 1);
          this.incrementEpoch();
        },
        resume: () => {
          Atomics.store(kill, 1, 0);
          handle.wake();
        },
        memoryBytes: () => this.askMemory(kill),
        setCpu: (cpu) => {
          if (!done) setCpuWords(kill, cpu);
        },
        cpuThrottling: () => throttling(req.kill),
        cpuNs: () => Number(Atomics.load(big, CPU_NS)),
        setMemoryLimit: (bytes) => this.setMemoryLimit(req, bytes, () => done),
      });
      if (ctx.signal?.aborted) onAbort();
      else ctx.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * RunControl.setMemoryLimit of a run with a store of its own (a Worker's or a pool's): checked
   * here, set at the run's next epoch callback (now, for a module in wasm) or, pooled, before its
   * next slice. The shape must fit (throws, saying why) and what the module's memory holds now
   * must, as the store's limiter divides the limit among its memories.
   */
  private async setMemoryLimit(req: RunRequest, bytes: number | undefined, over: () => boolean): Promise<void> {
    const kill = new Int32Array(req.kill);
    if (bytes !== undefined) {
      const perMemory = storeLimits(bytes, req.shape).memorySize;
      const used = await this.askMemory(kill);
      if (used !== undefined && used > perMemory) throw new MemoryLimitBelowUsage(bytes, used);
    }
    if (over()) return;
    setMemoryLimitWords(req.kill, bytes);
    this.incrementEpoch();
  }

  /**
   * Counts `words`' run among those with a CPU quota (or no longer): the epoch ticks while
   * there is one, so that each reaches its throttle's check (./cpu-throttle.ts). One tick
   * sends every running module of the engine through its callback; one without a quota
   * only publishes its memory figure there and carries on.
   */
  private holdToQuota(words: Int32Array, on: boolean): void {
    if (on) this.quotaRuns.add(words);
    else this.quotaRuns.delete(words);
    if (this.quotaRuns.size > 0) this.cpuTicker ??= setInterval(() => this.incrementEpoch(), CPU_TICK_MS);
    else if (this.cpuTicker) {
      clearInterval(this.cpuTicker);
      this.cpuTicker = undefined;
    }
  }

  /**
   * Run to completion on this thread (Runner.runHere): no Worker, so no second JS VM. The
   * thread is inside wasm until the module ends; `kill` (C signal handlers) records the
   * signal and bumps this engine's epoch, which the run's checks read as with a Worker.
   */
  async executeHere(ctx: RunContext & Precompiled, kill: ThreadKill): Promise<RunResult & { stats: RunStats }> {
    // A synchronous read: this thread has nothing else to do (docs/ARCHITECTURE.md, "Bun's thread pool").
    const prepared = await this.request(ctx, true);
    if ("early" in prepared) return prepared.early;
    const { req, cacheKey, cacheHit, loaded } = prepared;
    const { runRequest } = await import("./run-module.ts");
    // From here on a kill interrupts running wasm (an atomic add on the engine).
    const increment = (this.lib.wasmtime_engine_increment_epoch as unknown as { ptr: number }).ptr;
    kill.setInterrupt(increment, this.enginePointer);
    let gcMs: number | undefined;
    let gcAt: number | undefined;
    let cacheWrite: Promise<void> | undefined;
    const result = await runRequest(req, {
      kill: kill.word,
      sleep: (ns) => kill.sleep(ns),
      post: (m) => {
        if (m.type === "serialized") cacheWrite = this.cachePut(cacheKey, m.bytes);
      },
      // This thread stays inside wasm until the module ends, so no collection runs on its
      // own: collect start-up's garbage once the module first waits (about 1 MiB of an idle
      // executor, measured), not before its entry (a short run would pay for it in latency).
      // Then again at most every HERE_COLLECT_MS while it keeps waiting: each sleep leaves a
      // few objects, which grew a sleeping module's executor by 0.3 MiB a minute.
      onWait: () => {
        const t = performance.now();
        if (gcAt !== undefined && t - gcAt < HERE_COLLECT_MS) return;
        Bun.gc(true);
        Bun.shrink();
        gcAt = performance.now();
        gcMs = (gcMs ?? 0) + gcAt - t;
      },
    });
    loaded();
    // The executor exits once it has the answer: the cache write first.
    await cacheWrite;
    return { code: result.code, stats: { ...result.stats, cacheHit, ...(gcMs === undefined ? {} : { gcMs }) } };
  }

  /** Best effort: a write that fails is a miss next time. */
  private cachePut(cacheKey: string | undefined, bytes: Uint8Array): Promise<void> | undefined {
    if (!cacheKey || !this.cache) return undefined;
    return this.cache.put(cacheKey, bytes).catch(() => {});
  }

  /**
   * The run request for `ctx` (its checked compiled artifact by path where there is one), or
   * the result of a source that is no module. `loaded` is called once the run thread is done
   * with the artifact (it closes the checked file).
   */
  private async request(
    ctx: RunContext & Precompiled,
    syncRead = false,
  ): Promise<
    | { req: RunRequest; cacheKey?: string; cacheHit: boolean; loaded: () => void; imports?: string[] }
    | { early: RunResult & { stats: RunStats } }
  > {
    const read = async (path: string) =>
      syncRead ? (require("node:fs") as typeof import("node:fs")).readFileSync(path) : (await import("node:fs/promises")).readFile(path);
    let source: Uint8Array | undefined;
    try {
      source = ctx.module ?? (ctx.modulePath ? await (syncRead ? readModulePathSync : readModulePath)(ctx.modulePath) : undefined);
    } catch (e) {
      if (!(e instanceof ModuleFileError)) throw e;
      writeErr(ctx.stderr, `bunwasi: ${e.message}\n`);
      return { early: { code: EXIT_ENGINE_ERROR, stats: { instantiateMs: 0, runMs: 0 } } };
    }
    if (!source) throw new Error("RunContext needs module or modulePath");

    // What to send: precompiled bytes (trusted caller only), a cache hit, or source.
    let kind: ModuleKind;
    let module = source;
    let fallback: RunRequest["fallback"];
    let cacheKey: string | undefined;
    let cacheHit = false;
    // Precompiled bytes say nothing about what they hold; the caller does.
    let component = !!ctx.precompiledComponent;
    let serializedPath: string | undefined;
    let fallbackPath: RunRequest["fallbackPath"];
    let checked: CheckedEntry | undefined;
    if (ctx.precompiled) {
      kind = "serialized";
    } else {
      const src = sourceKind(source);
      if (!src) {
        writeErr(ctx.stderr, "bunwasi: not a wasm module or component (no \\0asm magic, not WAT)\n");
        return { early: { code: EXIT_ENGINE_ERROR, stats: { instantiateMs: 0, runMs: 0 } } };
      }
      const srcKind = src.kind;
      component = src.component;
      kind = srcKind;
      // A wasi:http service is served by its own library, not run once (./http/serve.ts).
      if (component && isHttpService(source)) return { early: await this.serveSource(source, srcKind, ctx) };
      // The artifact: the one the caller checked (the executor's, bound in by the shim), else
      // the cache's entry, checked here, right before it is loaded (the daemon).
      let given = ctx.compiled;
      if (!given && this.cache) {
        // In slices: in the daemon this thread serves every pod while a module is hashed.
        cacheKey = await CompileCache.keyInSlices(source, this.name, this.version, this.configFlags);
        // A component's artifact is read and deserialized from memory (./component.ts).
        checked = await checkedEntry(this.cache, cacheKey, component);
        given = checked?.fdPath;
      }
      // A component's artifact in memory; a given file that cannot be read is none (the source is compiled).
      let artifact: Uint8Array | undefined;
      if (given && component) artifact = checked?.bytes ?? (await read(given).then((b) => new Uint8Array(b), noArtifact));
      if (artifact) {
        kind = "serialized";
        module = artifact;
        fallback = { module: source, kind: srcKind };
        cacheHit = true;
      } else if (given && !component) {
        // A module's goes to the run thread by path (deserialize_file maps it): read into
        // memory, the artifact and the source sent along for a fallback were copied into both
        // threads' heaps, whose allocator kept the pages (1.7 MiB of an idle executor, measured).
        kind = "serialized";
        module = new Uint8Array(0);
        serializedPath = given;
        // By path whenever there is one (read again only if the artifact will not deserialize,
        // within the same cap): bytes sent along would sit in the run thread's heap.
        if (ctx.modulePath) fallbackPath = { path: ctx.modulePath, kind: srcKind };
        else fallback = { module: source, kind: srcKind };
        cacheHit = true;
      }
    }
    // A component's bytes are in hand: its file is not needed any more.
    if (checked?.bytes) checked.close();

    // The signal once killed, paused, the memory figure: ./run-atomics.ts.
    const killBuf = newRunWords();
    const req: RunRequest = {
      libPath: this.libPath,
      enginePtr: this.enginePointer,
      module,
      kind,
      component,
      fallback,
      serializedPath,
      fallbackPath,
      wantSerialized: !!cacheKey,
      // Only a caller that controls the run (shared mode's Stats) needs the thread id: it
      // costs a dlopen on the run thread, which an executor start should not pay.
      wantThreadId: !!ctx.onControl || !!ctx.cpu?.cpus,
      dropFileCaps: this.noFileCapabilities,
      ...(ctx.cpu?.cpus ? { cpus: ctx.cpu.cpus } : {}),
      collectBeforeRun: !!ctx.onControl,
      args: ctx.args,
      env: envPairs(ctx.env),
      rootDir: ctx.rootDir,
      rootReadOnly: !!ctx.rootReadOnly,
      preopens: (ctx.preopens ?? []).map((p) => [p.hostPath, p.guestPath, !!p.readOnly] as [string, string, boolean]),
      stdin: stdioPath(ctx.stdin, 0),
      stdout: stdioPath(ctx.stdout, 1),
      stderr: stdioPath(ctx.stderr, 2),
      stderrFd: ctx.stderr?.kind === "fd" ? ctx.stderr.fd : undefined,
      entry: ctx.entry ?? "_start",
      memoryLimitBytes: ctx.memoryLimitBytes,
      ...(ctx.memoryLimitBytes !== undefined && !ctx.precompiled ? shapeOf(this.lib, source) : {}),
      ...(ctx.maxOpenFiles !== undefined ? { maxOpenFiles: ctx.maxOpenFiles } : {}),
      ...(ctx.terminal ? { terminal: true } : {}),
      shadowsScript: shadowsScript(),
      hostModules: this.hostModules,
      kill: killBuf,
    };
    // What a pool must serve of it (./pool.ts): its imports, read where pools may take it.
    const imports = this.pools && !component && !ctx.precompiled ? shapeOf(this.lib, source, true).shape?.imports : undefined;
    return { req, cacheKey, cacheHit, loaded: () => checked?.close(), imports };
  }

  /**
   * The run's linear memory in bytes, fresh: a module running wasm publishes it at the epoch
   * callback a bump causes (within microseconds); one asleep or paused in a wait of ours
   * published it on the way in and cannot grow meanwhile. One blocked in another host call
   * (a read) cannot answer: after MEMORY_ASK_MS its last figure is used.
   *
   * The epoch is the engine's, shared by every run: a bump sends every running module
   * through its callback. So asks are gathered (./memory-asks.ts): all the asks made until
   * the bump goes out share it, and none goes out when they were all answered meanwhile.
   */
  private async askMemory(words: Int32Array): Promise<number | undefined> {
    if (Atomics.load(words, BLOCKED) === 0 && Atomics.load(words, MEM_PAGES) >= 0) {
      const asked = (Atomics.load(words, MEM_ASK) + 1) | 0;
      Atomics.store(words, MEM_ASK, asked);
      await this.memoryAsks.bumpSoon(() => Atomics.load(words, MEM_ANSWER) === asked);
      const answered = Atomics.load(words, MEM_ANSWER);
      if (answered !== asked) {
        // Raced with a timer of our own: the answer or the time is up, whichever comes first,
        // however the runtime's waitAsync treats its timeout.
        const wait = Atomics.waitAsync(words, MEM_ANSWER, answered, MEMORY_ASK_MS);
        if (wait.async) await Promise.race([wait.value, Bun.sleep(MEMORY_ASK_MS)]);
      }
    }
    return publishedMemory(words);
  }

  /**
   * Serve a wasi:http component given as a binary or as WAT text. The library reads only
   * binaries (it is built without wasmtime's `wat` feature), so text goes through this
   * library's wat2wasm first; the compile cache keys the text, as the shim's compile did.
   */
  private async serveSource(source: Uint8Array, kind: "wasm" | "wat", ctx: RunContext): Promise<RunResult & { stats: RunStats }> {
    if (kind === "wasm") return this.serve(source, ctx);
    let binary: Uint8Array;
    try {
      binary = wat2wasm(this.lib, source);
    } catch (e) {
      writeErr(ctx.stderr, `bunwasi: wasi:http: ${e instanceof Error ? e.message : String(e)}\n`);
      return { code: EXIT_ENGINE_ERROR, stats: { instantiateMs: 0, runMs: 0 } };
    }
    return this.serve(binary, ctx, source);
  }

  /** Serve a wasi:http component until ctx.signal aborts (only where the caller allows it). */
  private async serve(source: Uint8Array, ctx: RunContext, cacheSource?: Uint8Array): Promise<RunResult & { stats: RunStats }> {
    if (!ctx.httpServices && !ctx.httpNetwork) {
      writeErr(
        ctx.stderr,
        "bunwasi: a wasi:http component is served only where its caller gives it a network (RunContext.httpServices, httpNetwork)\n",
      );
      return { code: EXIT_ENGINE_ERROR, stats: { instantiateMs: 0, runMs: 0 } };
    }
    const { serveHttp, serviceControl } = await import("./http/serve.ts");
    const t = performance.now();
    const libDir = dirname(this.libPath);
    // The artifact: the caller's (checked by it), else the cache's entry under the serving
    // library's key, checked now; its file stays open until the service has loaded it.
    let checked: CheckedEntry | undefined;
    const httpLib = ctx.compiled || !this.cache ? undefined : findHttpHost(libDir);
    if (this.cache && httpLib) checked = await checkedEntry(this.cache, await httpCacheKeyInSlices(cacheSource ?? source, httpLib), false);
    const artifact = ctx.compiled ?? checked?.fdPath;
    const loaded = () => checked?.close();
    const r = await serveHttp(
      {
        source,
        env: envPairs(ctx.env),
        args: ctx.args,
        rootDir: ctx.rootDir,
        rootReadOnly: !!ctx.rootReadOnly,
        memoryLimitBytes: ctx.memoryLimitBytes,
        libDir,
        ...(artifact ? { artifact } : {}),
        // A caller that serves many (the daemon): sockets in the pod's namespace, and no
        // pooling allocator, whose reservation (~4 TiB of address space each) would run a
        // 47-bit address space out after about 30 services.
        ...(ctx.httpNetwork
          ? {
              ...(ctx.httpNetwork.netns !== undefined ? { netns: ctx.httpNetwork.netns } : {}),
              outgoing: ctx.httpNetwork.outgoing !== false,
              pooling: false,
            }
          : {}),
        ...(this.noFileCapabilities ? { fileCapabilities: false } : {}),
        // A caller with no cgroup per container (the daemon): the service's threads hold to its quota.
        ...(ctx.cpu ? { cpu: ctx.cpu } : {}),
        // The guest's output on the caller's fds (the daemon's copies of containerd's fifos).
        ...(ctx.stdout?.kind === "fd" ? { stdoutFd: ctx.stdout.fd } : {}),
        ...(ctx.stderr?.kind === "fd" ? { stderrFd: ctx.stderr.fd } : {}),
      },
      ctx.signal,
      (m) => writeErr(ctx.stderr, m),
      {
        onServing: (svc) => {
          loaded();
          ctx.onHttpService?.(() => svc.counters());
          ctx.onControl?.(serviceControl(svc));
        },
        ...(ctx.stopNow ? { stopNow: ctx.stopNow } : {}),
      },
    ).finally(loaded);
    return { code: r.code, service: true, stats: { instantiateMs: r.stats.startMs, runMs: performance.now() - t, ...r.stats } };
  }

  /** Free the engine. Only once no run is in flight. */
  close(): void {
    if (this.engine) this.lib.wasm_engine_delete(this.engine);
    this.engine = null;
  }
}

const noArtifact = () => undefined;

/**
 * `key`'s entry of the cache if it checks (its file open: close it once loaded); undefined on a
 * miss, a rejected entry (the run compiles, and writes its compile back), or a cache that
 * cannot be checked at all (its key file is not to be trusted: the run compiles).
 */
async function checkedEntry(cache: CompileCache, key: string, read: boolean): Promise<CheckedEntry | undefined> {
  try {
    return (await cache.check(key, { read })).entry;
  } catch {
    return undefined;
  }
}

let spare: Worker | null = null;

/**
 * Starts the thread the next run will use, so that its start-up (a few ms) overlaps
 * whatever the caller does before run(): loading libwasmtime, reading the module.
 */
export function prestartWorker(): void {
  spare ??= new Worker(workerEntry());
}

function takeWorker(): Worker {
  const w = spare ?? new Worker(workerEntry());
  spare = null;
  // Counted from its run on: the spare waiting for the first run is part of the engine's start.
  return countRunThread(w);
}

let shadows: string | undefined;

/** Where ./wasi-shadows.ts is (an entry point of the binary of its own, as the Worker scripts are). */
function shadowsScript(): string {
  shadows ??= workerScript(WASI_SHADOWS_SCRIPT);
  return shadows;
}

/**
 * Where the run worker's code is. From source: ./worker.ts beside this file. In a
 * `bun build --compile` binary the worker must be given as an extra entry point (./scripts.ts
 * names it for the builder, src/package/build.ts); it then lives in the embedded filesystem
 * at /$bunfs/root/<path relative to the build root>.js. BUNWASI_WASMTIME_WORKER overrides.
 */
export function workerEntry(): string {
  return workerScript(RUN_WORKER_SCRIPT, process.env.BUNWASI_WASMTIME_WORKER);
}

/**
 * The memories and tables a module source declares (./wasm-shape.ts), for its store's limits;
 * nothing when it cannot be read (the compile then says why). WAT text is translated first.
 */
function shapeOf(lib: WasmtimeLib, source: Uint8Array, imports = false): { shape?: WasmShape } {
  try {
    return { shape: wasmShape(isWasmBinary(source) ? source : wat2wasm(lib, source), imports) };
  } catch {
    return {};
  }
}

function envPairs(env: RunContext["env"]): [string, string][] {
  if (Array.isArray(env)) {
    return env.map((e) => {
      const i = e.indexOf("=");
      return i < 0 ? [e, ""] : [e.slice(0, i), e.slice(i + 1)];
    });
  }
  return Object.entries(env);
}

/**
 * null = inherit this process's own fd 0/1/2. Another fd is reopened through /proc/self/fd/N
 * (works for files, fifos, pipes and ttys; not for sockets, which cannot be opened by path).
 * Note wasmtime opens stdout/stderr paths with O_TRUNC (File::create).
 */
function stdioPath(s: StdioSpec | undefined, own: 0 | 1 | 2): string | null {
  if (!s || s.kind === "inherit") return null;
  if (s.kind === "fd") return s.fd === own ? null : `/proc/self/fd/${s.fd}`;
  return s.path;
}

function writeErr(s: StdioSpec | undefined, msg: string) {
  const fs = require("node:fs") as typeof import("node:fs");
  try {
    if (s?.kind === "path") fs.appendFileSync(s.path, msg);
    else fs.writeSync(s?.kind === "fd" ? s.fd : 2, msg);
  } catch {}
}
