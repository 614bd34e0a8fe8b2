// Settings for our long-lived processes (the shim server and the executor), through the
// environment: the only way to set them before the VM or the library reading them starts.
// Both processes run little JavaScript after start-up and then sit idle for the container's
// life, so everything here trades speed we do not use for memory we keep. Measured with
// bench/shim/smaps.ts (anonymous memory per process):
// - JavaScriptCore (Bun reads BUN_JSC_<option>): no threads that compile and collect
//   concurrently (a server went from 9 threads to 5, about 0.35 MiB less); collections run
//   on the thread that allocates, short with heaps of a few MiB.
// - No warm-up of GC blocks: JSC keeps a supply of pre-faulted 16 KiB blocks, and a thread
//   that fills it, for 10 s after any allocation burst; about 0.5 MiB in each process.
// - No baseline JIT (so none of the tiers above it): the executor's poll_oneoff callback,
//   called at each of a sleeping module's waits, was compiled after some 40 calls, and an
//   idle executor grew by about 0.15 MiB at each tier. The interpreter is fast enough for
//   the little JavaScript these processes run.
// - mimalloc (Bun's allocator) returns freed runs of pages to the kernel, but keeps up to
//   4 MiB of such holes for 256 of its epochs first: an idle server held 0.5 MiB it had
//   freed for its first two minutes. With no floor they go back within a second.
// - TOKIO_WORKER_THREADS: libwasmtime's WASI runs its tasks on a tokio runtime with one
//   worker per CPU; one is plenty for one module, and on a 64-core node that is 63 idle
//   threads (stacks, allocator arenas) less per container.

export const SMALL_VM_ENV: Readonly<Record<string, string>> = {
  BUN_JSC_useConcurrentJIT: "0",
  BUN_JSC_useConcurrentGC: "0",
  BUN_JSC_numberOfGCMarkers: "1",
  BUN_JSC_useWarmUpMarkedBlocks: "0",
  BUN_JSC_useBaselineJIT: "0",
  MIMALLOC_PURGE_HOLES_LARGE_FLOOR: "0",
  TOKIO_WORKER_THREADS: "1",
};

// The shared-mode daemon is busy where these processes are idle: it keeps its baseline JIT and
// its concurrent threads, and takes the two memory settings, which cost it nothing (measured
// with bench/shared/memory.ts at N = 20: 2.34 → 2.19 MiB per added container, 65.6 → 61.7 MiB
// at start). Its binary re-executes itself with them (src/linux/reexec.ts).
// - No optimizing JIT (DFG, and FTL above it): after its first thousand containers the daemon's
//   hot functions reach those tiers, and what that costs stays: 3 MiB of the compilers' own
//   code paged in from the binary, and the allocator pages their work left fragmented, about
//   most of the daemon's growth from its start to after all were deleted (issue 17: +16% → +2%
//   after the density benchmark's 2 × 1000, bench/shared/density.ts, each resident page counted
//   whole). The daemon's JavaScript is request handling, not hot loops: the baseline JIT serves
//   it (the same benchmark's create rates and kill latencies stayed within the machine's noise).
export const DAEMON_VM_ENV: Readonly<Record<string, string>> = {
  BUN_JSC_useWarmUpMarkedBlocks: "0",
  BUN_JSC_useDFGJIT: "0",
  MIMALLOC_PURGE_HOLES_LARGE_FLOOR: "0",
};

/** `env` with SMALL_VM_ENV added where it sets nothing of its own (the shim server's, from `start`). */
export function withSmallVm(env: Record<string, string | undefined>): Record<string, string | undefined> {
  return { ...SMALL_VM_ENV, ...env };
}

/**
 * The executor's whole environment, as OCI `KEY=VALUE` entries: SMALL_VM_ENV and nothing else.
 * The container's env is the module's (in its RunPlan, src/engines/run-plan.ts), never the
 * executor process's: an image's LD_PRELOAD or BUN_OPTIONS would otherwise run in it.
 */
export function smallVmEntries(): string[] {
  return Object.entries(SMALL_VM_ENV).map(([k, v]) => `${k}=${v}`);
}
