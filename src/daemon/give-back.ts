// The daemon gives memory back once a burst of container ends is over. Each wasm run is a
// thread with its own JS heap and its own share of glibc's malloc arenas (wasmtime's stores
// are Rust, on glibc malloc); when the thread ends, what it freed stays with the allocators:
// glibc keeps free arena memory until something trims it, and the main thread's JS heap
// keeps the garbage of every sandbox until a collection. Measured after 200 containers were
// deleted (bench/shared/daemon-smaps.ts): malloc_trim(0) alone returned 11 MiB of 16 MiB of
// arenas.
//
// Debounced: one pass `delayMs` after the last run ended, so a stream of deletes pays once.

import { dlopen, FFIType } from "bun:ffi";

let libc: { malloc_trim: (pad: number) => number } | null | undefined;

/** glibc's malloc_trim(3): returns free memory of every arena to the kernel. False if there is no glibc. */
export function mallocTrim(): boolean {
  if (libc === undefined) {
    try {
      libc = dlopen("libc.so.6", { malloc_trim: { args: [FFIType.u64], returns: FFIType.i32 } }).symbols as never;
    } catch {
      libc = null; // not glibc (musl has no malloc_trim): nothing to trim
    }
  }
  if (!libc) return false;
  libc.malloc_trim(0);
  return true;
}

/** A full collection of this thread's heap, JSC's shrink, then malloc_trim. */
export function giveBack(): void {
  Bun.gc(true);
  (Bun as { shrink?: () => void }).shrink?.();
  mallocTrim();
}

/** Returns `ended()`: call it whenever a run ends; giveBack runs once, `delayMs` after the last call. */
export function giveBackWhenQuiet(delayMs: number, pass: () => void = giveBack): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      pass();
    }, delayMs);
    // A pending pass must not keep a stopping daemon alive.
    timer.unref?.();
  };
}
