// Where bunwasi's wasi:http host library is (native/http-host, built by scripts/http-host.sh
// into build/http-host/) and which build it is, without loading it: the shim computes cache
// keys and ships the library into the executor directory without dlopening it.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { CompileCache } from "../../cache.ts";

export const HTTP_LIB_NAME = "libbunwasi_http.so";
/** Beside the library: its identity (crate, wasmtime version, digest of the .so), written by the build. */
export const HTTP_VERSION_FILE = "libbunwasi_http.version";

const REPO_ROOT = resolve(import.meta.dir, "..", "..", "..", "..");

/** Candidate paths, in order: $BUNWASI_HTTP_HOST_LIB, the executor directory, beside the binary or in ../lib (an install), the build tree. */
export function httpHostCandidates(dir?: string): string[] {
  const out: string[] = [];
  if (process.env.BUNWASI_HTTP_HOST_LIB) out.push(process.env.BUNWASI_HTTP_HOST_LIB);
  if (dir) out.push(join(dir, HTTP_LIB_NAME));
  const exeDir = dirname(process.execPath);
  out.push(join(exeDir, HTTP_LIB_NAME), join(exeDir, "..", "lib", HTTP_LIB_NAME), join(exeDir, "..", "http-host", HTTP_LIB_NAME));
  if (process.env.BUNWASI_LIB_DIR) out.push(join(process.env.BUNWASI_LIB_DIR, HTTP_LIB_NAME));
  out.push(join(REPO_ROOT, "build", "http-host", HTTP_LIB_NAME));
  return out;
}

/** Path of the library, or undefined when none is installed. */
export function findHttpHost(dir?: string): string | undefined {
  return httpHostCandidates(dir).find((p) => existsSync(p));
}

/** The library at `dir` (or found), else an error naming where it was looked for. */
export function requireHttpHost(dir?: string): string {
  const p = findHttpHost(dir);
  if (p) return p;
  throw new Error(
    `wasi:http components need ${HTTP_LIB_NAME} (built by scripts/http-host.sh); looked in: ${httpHostCandidates(dir).join(", ")}`,
  );
}

const versions = new Map<string, string>();

/** The build's identity from the version file beside it; "unknown" if there is none. */
export function httpHostVersion(path: string): string {
  let v = versions.get(path);
  if (v === undefined) {
    try {
      v = readFileSync(join(dirname(path), HTTP_VERSION_FILE), "utf8").trim() || "unknown";
    } catch {
      v = "unknown";
    }
    versions.set(path, v);
  }
  return v;
}

/** Name in cache keys: artifacts of this library never share a key with the C API library's. */
export const HTTP_ENGINE_NAME = "wasmtime-http";

/** Compile-cache key of a wasi:http component compiled by the library at `path`. */
export function httpCacheKey(source: Uint8Array, path: string): string {
  return CompileCache.key(source, HTTP_ENGINE_NAME, httpHostVersion(path), "component");
}

/** httpCacheKey, hashed without holding the event loop (CompileCache.keyInSlices). */
export function httpCacheKeyInSlices(source: Uint8Array, path: string): Promise<string> {
  return CompileCache.keyInSlices(source, HTTP_ENGINE_NAME, httpHostVersion(path), "component");
}
