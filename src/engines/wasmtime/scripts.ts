// The scripts this engine starts Worker threads on, named once: by the code that starts them
// and by the shim builder (src/package/build.ts), which makes them extra entry points of a
// `bun build --compile` binary so that the binary carries them (../../common/compiled.ts).

/** The run thread (./worker.ts): links and runs one module. */
export const RUN_WORKER_SCRIPT = new URL("./worker.ts", import.meta.url);
/** A run pool's thread (./pool-worker.ts): drives many modules' stores. */
export const POOL_WORKER_SCRIPT = new URL("./pool-worker.ts", import.meta.url);
/** The compile thread (./compile-worker.ts): compiles a module for the compile cache. */
export const COMPILE_WORKER_SCRIPT = new URL("./compile-worker.ts", import.meta.url);

/**
 * The WASI shadows (./wasi-shadows.ts): no Worker's script, but a run thread loads it by path
 * on its first open, so that it is not bundled into the run thread's script (whose size every
 * run thread pays for).
 */
export const WASI_SHADOWS_SCRIPT = new URL("./wasi-shadows.ts", import.meta.url);

/** Every script above: what a binary with this engine must embed. */
export const WASMTIME_SCRIPTS: readonly URL[] = [RUN_WORKER_SCRIPT, POOL_WORKER_SCRIPT, COMPILE_WORKER_SCRIPT, WASI_SHADOWS_SCRIPT];
