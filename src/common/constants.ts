// Values more than one part of the shim must agree on. Each is here once; code that needs
// one imports it instead of writing the number again.

/** Our version, as `-v`, `-info` and the Task service's Connect report it. */
export const SHIM_VERSION = "bunwasi 0.1.0";

/** Exit status of a module that trapped: 128+SIGABRT, as the wasmtime CLI reports a trap on unix. */
export const EXIT_TRAP = 134;
/** Exit status when the module never ran: not wasm, a link error, a missing export or file. */
export const EXIT_ENGINE_ERROR = 125;
/**
 * Exit status when a process is gone and nobody could learn how it ended (another reaper took
 * it, or its state was lost). containerd shows it as is; 255 is what runc-v2 reports then too.
 */
export const STATUS_UNKNOWN = 255;

/**
 * The most bytes a module file may have (a wasm module, WAT text or a component; an OCI
 * artifact's layer has the same bound). A larger file, or a device, fifo or socket in its
 * place, is refused before anything of it is read (src/engines/module-file.ts).
 */
export const MODULE_MAX_BYTES = 256 << 20;
/**
 * How long a running module may take to notice a kill before its run is ended without it.
 * A module blocked in a host call (sleep, a read on a fifo) only sees the interrupt at its
 * next wasm instruction; the executor then exits anyway with 128+signal.
 */
export const KILL_GRACE_MS = 200;
/**
 * How long Kill waits for a freshly started executor to install its signal handlers before
 * delivering a catchable signal (otherwise the default action would kill it silently, or the
 * signal would be lost to a handler not yet there). The executor installs them first thing,
 * so the wait ends early on any healthy start; the bound is long because a start can take
 * seconds on a loaded node, and as PID 1 of its container the executor ignores a signal
 * that arrives before its handlers (measured: lost kills at load 60-70 with 2 s).
 */
export const SIGNAL_READY_TIMEOUT_MS = 10_000;
/** How long the server waits for queued events to reach containerd before it exits. */
export const EVENTS_FLUSH_TIMEOUT_MS = 2000;
/** How long in-flight calls may run on after Shutdown before the server closes. */
export const SHUTDOWN_GRACE_MS = 1000;
/** Connecting to containerd's event socket. */
export const EVENTS_CONNECT_TIMEOUT_MS = 2000;
/**
 * How long the shim server must have answered no call before it gives memory back (a full
 * collection, then JSC drops compiled code and free heap blocks). A pod's server idles for
 * nearly all its life; a call after that re-reads its code from the binary's bytecode.
 */
export const IDLE_SHRINK_MS = 1000;
