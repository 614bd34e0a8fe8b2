// Compile cache: serialized (precompiled) modules on disk.
//
// Key = sha256(module bytes) + engine name + engine/library version + config flags.
// Writes are atomic (unique tmp file + rename), so concurrent starts of the same module
// either see a whole artifact or none; two racing writers both write the same content
// and the last rename wins. Total size is bounded: after a write, the oldest entries
// (by mtime; a hit refreshes mtime) are evicted until under the limit.
//
// Only bytes this process (or another bunwasi of the same engine version) wrote are
// ever loaded: the directory must not be writable by workloads, since a deserialized
// artifact is native code.

import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface CompileCacheOptions {
  dir: string;
  /** Upper bound of the directory's total size; default 512 MiB. */
  maxBytes?: number;
}

const SUFFIX = ".cwasm";

export class CompileCache {
  readonly dir: string;
  readonly maxBytes: number;

  constructor(opts: CompileCacheOptions) {
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes ?? 512 * 1024 * 1024;
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  /** Cache key for `module` compiled by `engine` at `version` with config `flags`. */
  static key(module: Uint8Array, engine: string, version: string, flags: string): string {
    // Bun's hasher, not node:crypto: every start of the shim binary imports this module
    // (through its engine), and node:crypto costs milliseconds to load.
    const digest = new Bun.CryptoHasher("sha256").update(module).digest("hex");
    const meta = new Bun.CryptoHasher("sha256").update(`${engine}\0${version}\0${flags}`).digest("hex").slice(0, 16);
    return `${digest}-${engine}-${meta}`;
  }

  private path(key: string): string {
    if (!/^[A-Za-z0-9._-]+$/.test(key)) throw new Error(`bad cache key ${key}`);
    return join(this.dir, key + SUFFIX);
  }

  has(key: string): boolean {
    return existsSync(this.path(key));
  }

  /**
   * The artifact's path on a hit (its mtime refreshed, as get() does), else undefined: for an
   * engine that maps the file itself instead of reading it into memory.
   */
  hitPath(key: string): string | undefined {
    const p = this.path(key);
    try {
      const now = new Date();
      utimesSync(p, now, now);
      return p;
    } catch {
      // Gone, or a read-only cache (the executor's mount): a hit if it is there.
      return existsSync(p) ? p : undefined;
    }
  }

  get(key: string): Uint8Array | undefined {
    const p = this.path(key);
    try {
      const b = readFileSync(p);
      try {
        const now = new Date();
        utimesSync(p, now, now);
      } catch {
        // evicted meanwhile: the bytes we read are still whole
      }
      return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    } catch {
      return undefined;
    }
  }

  put(key: string, bytes: Uint8Array): void {
    const p = this.path(key);
    const tmp = `${p}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
    try {
      writeFileSync(tmp, bytes, { mode: 0o600 });
      renameSync(tmp, p);
    } catch (e) {
      try {
        unlinkSync(tmp);
      } catch {}
      throw e;
    }
    this.evict();
  }

  delete(key: string): void {
    try {
      unlinkSync(this.path(key));
    } catch {}
  }

  /** Remove oldest entries until the total is within maxBytes; stale tmp files (>10 min) too. */
  evict(): void {
    const entries: { p: string; size: number; mtime: number }[] = [];
    let total = 0;
    const now = Date.now();
    for (const name of readdirSync(this.dir)) {
      const p = join(this.dir, name);
      let st: ReturnType<typeof statSync>;
      try {
        st = statSync(p);
      } catch {
        continue;
      }
      if (name.includes(`${SUFFIX}.tmp-`)) {
        if (now - st.mtimeMs > 10 * 60_000) {
          try {
            unlinkSync(p);
          } catch {}
        }
        continue;
      }
      if (!name.endsWith(SUFFIX)) continue;
      entries.push({ p, size: st.size, mtime: st.mtimeMs });
      total += st.size;
    }
    if (total <= this.maxBytes) return;
    entries.sort((a, b) => a.mtime - b.mtime);
    for (const e of entries) {
      if (total <= this.maxBytes) break;
      try {
        unlinkSync(e.p);
      } catch {}
      total -= e.size;
    }
  }

  /** Total bytes of cached artifacts. */
  size(): number {
    let total = 0;
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith(SUFFIX)) continue;
      try {
        total += statSync(join(this.dir, name)).size;
      } catch {}
    }
    return total;
  }
}
