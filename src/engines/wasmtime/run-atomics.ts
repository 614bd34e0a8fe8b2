// The Int32 words a run shares between the thread that owns it (WasmtimeEngine.run, where
// kills, pauses and Stats come from) and the thread that runs the module (./worker.ts,
// ./store.ts). Only Atomics touch them: the run thread may be inside wasm, a host call or
// the epoch callback at any moment.
//
//   [KILL]        the signal once killed; 0 while running
//   [PAUSED]      1 while paused (the run thread waits in the epoch callback or its sleep)
//   [MEM_PAGES]   the module's linear memory in 64 KiB pages, as last published; -1 unknown
//   [MEM_ASK]     bumped by the owner to ask for a fresh figure (then it bumps the epoch)
//   [MEM_ANSWER]  set to MEM_ASK's value by the run thread once it has published
//   [BLOCKED]     1 while the run thread sits in a wait of ours (sleep, pause): its memory
//                 cannot change, so the published figure is current and nobody need ask
//   [CPU_QUOTA]   the CPU quota in µs per CPU_PERIOD (the spec's linux.resources.cpu); <= 0
//                 unlimited. Written by the owner (start, Update), read at each epoch callback
//   [CPU_PERIOD]  the period in µs
//   [CPU_SHARES]  the spec's shares (a weight; 0 none): the run thread's nice value follows it
//   [CPU_CHECKS]  epoch callbacks that checked a quota (Stats: throttling periods)
//   [CPU_THROTTLED] of those, the ones that slept (Stats: throttled periods)
//   [MEM_LIMIT_GEN] bumped by the owner when it sets a new memory limit (Update); the run
//                 thread applies MEM_LIMIT to its store at its next epoch callback
//   [THROTTLED_NS] (a 64-bit word after the others) nanoseconds slept by the throttle
//   [MEM_LIMIT]   (64-bit, after it) the memory limit in bytes for MEM_LIMIT_GEN; -1 none
//   [CPU_NS]      (64-bit, after it) CPU time the module has used, where its thread is not its
//                 own (a run pool counts each of its slices, ./pool-worker.ts); 0 otherwise

export const KILL = 0;
export const PAUSED = 1;
export const MEM_PAGES = 2;
export const MEM_ASK = 3;
export const MEM_ANSWER = 4;
export const BLOCKED = 5;
export const CPU_QUOTA = 6;
export const CPU_PERIOD = 7;
export const CPU_SHARES = 8;
export const CPU_CHECKS = 9;
export const CPU_THROTTLED = 10;
export const MEM_LIMIT_GEN = 11;
const WORDS = 12; // an even count: the 64-bit words after them are aligned
/** Index of THROTTLED_NS in a BigInt64Array over the same buffer. */
export const THROTTLED_NS = WORDS / 2;
/** Index of MEM_LIMIT in a BigInt64Array over the same buffer. */
export const MEM_LIMIT = THROTTLED_NS + 1;
/** Index of CPU_NS in a BigInt64Array over the same buffer. */
export const CPU_NS = MEM_LIMIT + 1;

/** The wasm page: linear memory grows in these (the default page size). */
export const WASM_PAGE = 65536;

export function newRunWords(): SharedArrayBuffer {
  const buf = new SharedArrayBuffer(WORDS * 4 + 24);
  Atomics.store(new Int32Array(buf), MEM_PAGES, -1);
  return buf;
}

/** Run thread: the module's linear memory is now `bytes`; answers any request. */
export function publishMemory(words: Int32Array, bytes: number): void {
  Atomics.store(words, MEM_PAGES, Math.ceil(bytes / WASM_PAGE));
  const asked = Atomics.load(words, MEM_ASK);
  if (Atomics.load(words, MEM_ANSWER) !== asked) {
    Atomics.store(words, MEM_ANSWER, asked);
    Atomics.notify(words, MEM_ANSWER);
  }
}

/** The published figure in bytes, or undefined while none is (not instantiated yet, a component). */
export function publishedMemory(words: Int32Array): number | undefined {
  const pages = Atomics.load(words, MEM_PAGES);
  return pages < 0 ? undefined : pages * WASM_PAGE;
}

/** The CPU limits a run obeys, as the owner sets them (start, Update). */
export interface CpuWords {
  /** µs per period; <= 0 or absent: no quota. */
  quota?: number;
  period?: number;
  shares?: number;
}

/** Owner: sets the run's CPU limits (read by its thread at its next epoch callback). */
export function setCpuWords(words: Int32Array, cpu: CpuWords): void {
  const quota = cpu.quota !== undefined && cpu.quota > 0 ? Math.min(Math.floor(cpu.quota), 0x7fffffff) : 0;
  // The kernel's default period when the spec gives a quota without one.
  const period = cpu.period !== undefined && cpu.period > 0 ? Math.min(Math.floor(cpu.period), 0x7fffffff) : 100_000;
  Atomics.store(words, CPU_PERIOD, period);
  Atomics.store(words, CPU_QUOTA, quota);
  Atomics.store(words, CPU_SHARES, cpu.shares !== undefined && cpu.shares > 0 ? Math.min(Math.floor(cpu.shares), 0x7fffffff) : 0);
}

/** What the throttle has done so far, in the shape of a cgroup's cpu.stat. */
export function throttling(buf: SharedArrayBuffer): { periods: number; throttledPeriods: number; throttledNs: number } {
  const words = new Int32Array(buf, 0, WORDS);
  return {
    periods: Atomics.load(words, CPU_CHECKS) >>> 0,
    throttledPeriods: Atomics.load(words, CPU_THROTTLED) >>> 0,
    throttledNs: Number(Atomics.load(new BigInt64Array(buf), THROTTLED_NS)),
  };
}

/** Owner: the store's memory limit is `bytes` from the run thread's next epoch callback on (undefined: none). */
export function setMemoryLimitWords(buf: SharedArrayBuffer, bytes: number | undefined): void {
  Atomics.store(new BigInt64Array(buf), MEM_LIMIT, bytes === undefined ? -1n : BigInt(Math.floor(bytes)));
  Atomics.add(new Int32Array(buf, 0, WORDS), MEM_LIMIT_GEN, 1);
}

/**
 * Run thread: the memory limit set since generation `seen`, if any: its generation and bytes
 * (undefined: none). Words without room for one (the executor's kill word) never have one.
 */
export function newMemoryLimit(words: Int32Array, seen: number): { gen: number; bytes: number | undefined } | undefined {
  if (words.length <= MEM_LIMIT_GEN || !(words.buffer instanceof SharedArrayBuffer) || words.buffer.byteLength < (MEM_LIMIT + 1) * 8)
    return undefined;
  const gen = Atomics.load(words, MEM_LIMIT_GEN);
  if (gen === seen) return undefined;
  const bytes = Atomics.load(new BigInt64Array(words.buffer), MEM_LIMIT);
  return { gen, bytes: bytes < 0n ? undefined : Number(bytes) };
}
