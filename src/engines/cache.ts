// Compile cache: serialized (precompiled) modules on disk.
//
// Key = sha256(module bytes) + engine name + engine/library version + config flags.
// File access is synchronous: asynchronous fs calls would start Bun's thread pool, whose
// threads then stay for a shim server's whole life (memory per idle pod, issue 8), and a write
// of a few MiB costs a millisecond or two. What could hold up a serving thread for long,
// hashing a large module, is done in slices (keyInSlices). Writes are atomic: each writer has
// its own tmp file and renames it into place, so
// concurrent writers of one key (in one process or several) each put a whole file there and
// the last rename wins, and readers see a whole artifact or none. Total size is bounded:
// after a write, the oldest entries (by mtime; a hit refreshes mtime) are evicted until
// under the limit.
//
// Only bytes this process (or another bunwasi of the same engine version) wrote are
// ever loaded: the directory must not be writable by workloads, since a deserialized
// artifact is native code.

import {
  accessSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  type Stats,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";

export interface CompileCacheOptions {
  dir: string;
  /** Upper bound of the directory's total size; default 512 MiB. */
  maxBytes?: number;
}

const SUFFIX = ".cwasm";
/** Bytes hashed per turn of the event loop by keyInSlices: about 1 ms of sha256 here. */
export const HASH_SLICE = 1 << 20;

function keyOf(digest: string, engine: string, version: string, flags: string): string {
  const meta = new Bun.CryptoHasher("sha256").update(`${engine}\0${version}\0${flags}`).digest("hex").slice(0, 16);
  return `${digest}-${engine}-${meta}`;
}
const TMP_MARK = `${SUFFIX}.tmp-`;

export class CompileCache {
  readonly dir: string;
  readonly maxBytes: number;

  constructor(opts: CompileCacheOptions) {
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes ?? 512 * 1024 * 1024;
  }

  /** Cache key for `module` compiled by `engine` at `version` with config `flags`. */
  static key(module: Uint8Array, engine: string, version: string, flags: string): string {
    // Bun's hasher, not node:crypto: every start of the shim binary imports this module
    // (through its engine), and node:crypto costs milliseconds to load.
    return keyOf(new Bun.CryptoHasher("sha256").update(module).digest("hex"), engine, version, flags);
  }

  /**
   * The same key, hashed HASH_SLICE bytes at a time with a turn of the event loop between
   * slices: for a process serving other pods meanwhile (a shim server, the daemon), where
   * hashing a 50 MiB module in one go would hold every other call up for tens of ms.
   */
  static async keyInSlices(module: Uint8Array, engine: string, version: string, flags: string): Promise<string> {
    const h = new Bun.CryptoHasher("sha256");
    for (let at = 0; at < module.length; at += HASH_SLICE) {
      if (at > 0) await new Promise((r) => setImmediate(r));
      h.update(module.subarray(at, at + HASH_SLICE));
    }
    return keyOf(h.digest("hex"), engine, version, flags);
  }

  private path(key: string): string {
    if (!/^[A-Za-z0-9._-]+$/.test(key)) throw new Error(`bad cache key ${key}`);
    return join(this.dir, key + SUFFIX);
  }

  async has(key: string): Promise<boolean> {
    try {
      accessSync(this.path(key));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * The artifact's path on a hit (its mtime refreshed, as get() does), else undefined: for an
   * engine that maps the file itself instead of reading it into memory. A miss costs one
   * system call: utimes fails ENOENT at the path lookup, before anything else is checked.
   */
  hitPath(key: string): string | undefined {
    const p = this.path(key);
    try {
      const now = new Date();
      utimesSync(p, now, now);
      return p;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") return undefined;
      // The path resolved but the file may not be touched: a read-only cache (the executor's
      // mount) or another owner's file. A hit. Anything else (EACCES on the way): look.
      if (code === "EROFS" || code === "EPERM") return p;
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

  /** Stores `bytes` under `key`: resolves once the artifact is in place (and the cache bounded again). */
  async put(key: string, bytes: Uint8Array): Promise<void> {
    const p = this.path(key);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${p}${TMP_MARK}${process.pid}-${Math.random().toString(36).slice(2)}`;
    try {
      // "wx": a tmp name is never shared, not even by a pid reused after a crash.
      writeFileSync(tmp, bytes, { mode: 0o600, flag: "wx" });
      renameSync(tmp, p);
    } catch (e) {
      // Not a tmp file of someone else's that happened to have our name.
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") unlinkQuietly(tmp);
      throw e;
    }
    await this.evict();
  }

  async delete(key: string): Promise<void> {
    unlinkQuietly(this.path(key));
  }

  /**
   * Removes the oldest entries until the total is within maxBytes, and tmp files older than
   * 10 minutes (a writer that died). One scan at a time per cache: writes that end while one
   * runs share the next.
   */
  evict(): Promise<void> {
    if (this.evicting) {
      this.evictAgain ??= this.evicting.then(() => {
        this.evictAgain = null;
        return this.evict();
      });
      return this.evictAgain;
    }
    this.evicting = this.scanAndEvict().finally(() => {
      this.evicting = null;
    });
    return this.evicting;
  }

  private evicting: Promise<void> | null = null;
  private evictAgain: Promise<void> | null = null;

  private async scanAndEvict(): Promise<void> {
    const entries: { p: string; size: number; mtime: number }[] = [];
    let total = 0;
    const now = Date.now();
    for (const name of readdirSync(this.dir)) {
      const p = join(this.dir, name);
      const st = statOrNull(p);
      if (st === null) continue;
      if (name.includes(TMP_MARK)) {
        if (now - st.mtimeMs > 10 * 60_000) unlinkQuietly(p);
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
      unlinkQuietly(e.p);
      total -= e.size;
    }
  }

  /** Total bytes of cached artifacts. */
  async size(): Promise<number> {
    let total = 0;
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith(SUFFIX)) continue;
      total += statOrNull(join(this.dir, name))?.size ?? 0;
    }
    return total;
  }
}

function statOrNull(p: string): Stats | null {
  try {
    return statSync(p);
  } catch {
    return null;
  }
}

/** unlink, where a file already gone (or not ours to remove) changes nothing for the caller. */
function unlinkQuietly(p: string): void {
  try {
    unlinkSync(p);
  } catch {}
}
