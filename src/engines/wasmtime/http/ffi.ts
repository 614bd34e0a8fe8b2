// bun:ffi bindings of bunwasi's wasi:http host library (native/http-host/src/lib.rs, whose
// C ABI section documents each call).

import { dlopen, FFIType, type Pointer, toArrayBuffer } from "bun:ffi";

const { ptr, i32, u32, u64, cstring } = FFIType;
const usize = "usize" as const;

const SYMBOLS = {
  bunwasi_http_version: { args: [], returns: cstring },
  bunwasi_http_compile: { args: [ptr, usize, ptr, ptr, ptr, usize], returns: i32 },
  bunwasi_http_bytes_free: { args: [ptr, usize], returns: FFIType.void },
  bunwasi_http_start: { args: [ptr, usize, ptr, usize, ptr, usize], returns: ptr },
  bunwasi_http_port: { args: [ptr], returns: u32 },
  bunwasi_http_stop: { args: [ptr], returns: FFIType.void },
  bunwasi_http_abort: { args: [ptr], returns: FFIType.void },
  bunwasi_http_state: { args: [ptr], returns: i32 },
  bunwasi_http_counter: { args: [ptr, i32], returns: u64 },
  bunwasi_http_latency_bounds: { args: [ptr, usize], returns: usize },
  bunwasi_http_latency: { args: [ptr, ptr, usize], returns: usize },
  bunwasi_http_free: { args: [ptr], returns: i32 },
  bunwasi_http_pause: { args: [ptr, i32], returns: FFIType.void },
  bunwasi_http_set_cpu: { args: [ptr, FFIType.i64, u64, i32], returns: FFIType.void },
  bunwasi_http_set_memory_limit: { args: [ptr, u64], returns: i32 },
  bunwasi_http_set_cpus: { args: [ptr, ptr, usize, ptr, usize], returns: i32 },
} as const;

export type HttpHostLib = ReturnType<typeof dlopen<typeof SYMBOLS>>["symbols"];

const loaded = new Map<string, HttpHostLib>();

/**
 * Load (once per thread and path) and return the bound symbols. The library is built from the
 * same tree as this file (scripts/http-host.sh, installed beside the binary): one that lacks a
 * call bound here is an older build, and loading it fails saying so.
 */
export function httpHost(path: string): HttpHostLib {
  let lib = loaded.get(path);
  if (!lib) {
    try {
      lib = dlopen(path, SYMBOLS).symbols;
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      if (!/^Symbol ".*" not found/.test(msg)) throw e;
      throw new Error(`${msg}: not the wasi:http host library of this bunwasi (an older build?); rebuild it (scripts/http-host.sh)`);
    }
    loaded.set(path, lib);
  }
  return lib;
}

/**
 * A service's request latencies, from a request's head read to its response body's end (or
 * its failure): bucket upper bounds and the sum in seconds, a count per bucket (not
 * cumulative; one more than the bounds, for the requests above the last).
 */
export interface HttpLatency {
  bounds: readonly number[];
  counts: readonly number[];
  sum: number;
}

const boundsOf = new WeakMap<HttpHostLib, readonly number[]>();

/** The library's latency bucket bounds in seconds (fixed per build, read once). */
export function latencyBounds(lib: HttpHostLib): readonly number[] {
  let b = boundsOf.get(lib);
  if (!b) {
    const n = Number(lib.bunwasi_http_latency_bounds(null, 0));
    const us = new BigUint64Array(n);
    if (Number(lib.bunwasi_http_latency_bounds(us, n)) !== n) throw new Error("bunwasi_http_latency_bounds: its count changed");
    b = Object.freeze([...us].map((v) => Number(v) / 1e6));
    boundsOf.set(lib, b);
  }
  return b;
}

/** A reader of `server`'s latency histogram, with its buffer made once (a scrape reads it often). */
export function latencyReader(lib: HttpHostLib, server: Pointer): () => HttpLatency {
  const bounds = latencyBounds(lib);
  const words = new BigUint64Array(bounds.length + 2);
  return () => {
    const n = Number(lib.bunwasi_http_latency(server, words, words.length));
    if (n !== words.length) throw new Error(`bunwasi_http_latency: ${n} words, want ${words.length}`);
    const counts = [...words.subarray(0, bounds.length + 1)].map(Number);
    return { bounds, counts, sum: Number(words[bounds.length + 1]) / 1e6 };
  };
}

const ERR_CAP = 4096;

function errText(buf: Buffer): string {
  const end = buf.indexOf(0);
  return buf.subarray(0, end < 0 ? buf.length : end).toString("utf8");
}

/** Compile a component to the library's serialized form (for the compile cache). */
export function compileHttpComponent(lib: HttpHostLib, source: Uint8Array): Uint8Array {
  const outPtr = new BigUint64Array(1);
  const outLen = new BigUint64Array(1);
  const err = Buffer.alloc(ERR_CAP);
  if (lib.bunwasi_http_compile(source, source.length, outPtr, outLen, err, ERR_CAP) !== 0) {
    throw new Error(`compile: ${errText(err)}`);
  }
  const p = Number(outPtr[0]) as Pointer;
  const len = Number(outLen[0]);
  try {
    return len ? new Uint8Array(toArrayBuffer(p, 0, len)).slice() : new Uint8Array(0);
  } finally {
    lib.bunwasi_http_bytes_free(p, len);
  }
}

/** Key/value pairs (keys repeat for lists) as the library reads them: NUL-terminated strings. */
export function encodeConfig(pairs: [string, string][]): Buffer {
  for (const [k, v] of pairs) if (k.includes("\0") || v.includes("\0")) throw new Error(`config ${k}: NUL in value`);
  return Buffer.from(pairs.map(([k, v]) => `${k}\0${v}\0`).join(""), "utf8");
}

/** Start serving; throws with the library's message (link error, bind failure, not a proxy). */
export function startHttpServer(lib: HttpHostLib, config: Buffer, source: Uint8Array): Pointer {
  const err = Buffer.alloc(ERR_CAP);
  const s = lib.bunwasi_http_start(config, config.length, source, source.length, err, ERR_CAP) as Pointer | null;
  if (!s) throw new Error(errText(err));
  return s;
}
