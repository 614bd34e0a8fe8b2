// Where libwasmtime.so is, and which version it is, without loading it (no bun:ffi here):
// the shim process computes cache keys and ships the library into the executor directory
// without ever dlopening it.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

export const LIB_NAME = "libwasmtime.so";
export const VERSION_FILE = "libwasmtime.version";

const REPO_ROOT = resolve(import.meta.dir, "..", "..", "..");

/** Candidate locations of libwasmtime.so, in order of preference. */
export function libwasmtimeCandidates(): string[] {
  const out: string[] = [];
  const env = process.env.BUNWASI_LIBWASMTIME;
  if (env) out.push(env);
  const exeDir = dirname(process.execPath);
  out.push(join(exeDir, LIB_NAME), join(exeDir, "..", "lib", LIB_NAME));
  const libDir = process.env.BUNWASI_LIB_DIR;
  if (libDir) out.push(join(libDir, LIB_NAME));
  out.push(join(REPO_ROOT, "build", "lib", LIB_NAME));
  return out;
}

/** Path of the libwasmtime to use; throws with the searched list if none exists. */
export function findLibwasmtime(): string {
  const env = process.env.BUNWASI_LIBWASMTIME;
  if (env) {
    if (!existsSync(env)) throw new Error(`BUNWASI_LIBWASMTIME=${env} does not exist`);
    return env;
  }
  const c = libwasmtimeCandidates();
  for (const p of c) if (existsSync(p)) return p;
  throw new Error(`libwasmtime.so not found; looked in: ${c.join(", ")} (run scripts/libwasmtime.sh)`);
}

/** Version string of the library at `path`: libwasmtime.version beside it, else "unknown". */
export function libwasmtimeVersion(path: string): string {
  try {
    return readFileSync(join(dirname(path), VERSION_FILE), "utf8").trim() || "unknown";
  } catch {
    return "unknown";
  }
}

/** Cranelift opt level the shim and its executors compile with (1 = speed). */
export const OPT_LEVEL = 1;

/** Engine settings that change compiled code (part of the compile-cache key). */
export function configFlags(optLevel: number): string {
  return `epoch=1;opt=${optLevel}`;
}
