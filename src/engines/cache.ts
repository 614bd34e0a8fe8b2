// Compile cache: serialized (precompiled) modules on disk.
//
// Key = sha256(module bytes) + engine name + engine/library version + config flags.
// Writes are asynchronous (a write of a few MiB must not hold up the other pods' calls on a
// server's thread) and atomic: each writer has its own tmp file and renames it into place, so
// concurrent writers of one key (in one process or several) each put a whole file there and
// the last rename wins, and readers see a whole artifact or none. Total size is bounded:
// after a write, the oldest entries (by mtime; a hit refreshes mtime) are evicted until
// under the limit.
//
// Only bytes this process (or another bunwasi of the same engine version) wrote are
// ever loaded: the directory must not be writable by workloads, since a deserialized
// artifact is native code.

import { accessSync, existsSync, readFileSync, utimesSync } from "node:fs";
import { join } from "node:path";
import type { Compiler } from "./engine.ts";

// node:fs/promises is imported on first use, not with this module: the executor imports the
// cache (through its engine) but only reads it, synchronously (measured: the executor 0.1 MiB
// smaller; a bare binary that imports the module and uses nothing of it, 0.2 MiB).
const fsp = () => import("node:fs/promises");

/** Where the entry came from in one ensure(): already there, fetched from elsewhere, or compiled now. */
export type Filled = "cache" | "fetched" | "compiled";

export interface EnsureOptions<T> {
  /**
   * Compiled bytes kept somewhere else (an artifact's compile in containerd's content store),
   * asked on a miss before compiling; undefined when there are none worth taking. Trusted as
   * they are: check them before returning them.
   */
  fetch?: (key: string) => Promise<Uint8Array | undefined>;
  /**
   * Runs once the cache holds the key, inside the shared operation, so once for every caller
   * that shares it: storing the compile elsewhere too. Its result is every caller's.
   */
  publish?: (key: string, from: Filled) => Promise<T>;
  /**
   * Callers whose fetch or publish reach somewhere else (another containerd or namespace) share
   * an ensure only with callers of the same scope. The compile itself is shared whatever the
   * scope. Default "".
   */
  scope?: string;
}

export interface Ensured<T> {
  key: string;
  from: Filled;
  /** What publish returned (undefined without one). */
  published: T | undefined;
}

/**
 * What is under way, by id: callers that ask for the same thing while it runs get the same
 * promise. Module-wide rather than per CompileCache, so that two caches of one directory share.
 */
const underWay = new Map<string, Promise<unknown>>();

function shared<T>(id: string, op: () => Promise<T>): Promise<T> {
  const known = underWay.get(id);
  if (known) return known as Promise<T>;
  const p = op().finally(() => underWay.delete(id));
  underWay.set(id, p);
  return p;
}

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

  /**
   * The one way to compile a module into the cache: makes sure the cache holds `source` as
   * `compiler` compiles it and returns its key. A hit costs the key's hash and a stat. On a
   * miss, `o.fetch` is asked first, then the compiler runs (off this thread) and the artifact
   * is written. Callers that ask for one key while that runs (the replicas of a pod, many pods
   * of one image in the daemon) share it: one compile and one write. A compile error rejects
   * every caller that shared it, and the next ensure tries again.
   */
  async ensure<T = undefined>(compiler: Compiler, source: Uint8Array, o: EnsureOptions<T> = {}): Promise<Ensured<T>> {
    const key = await compiler.cacheKey(source);
    return shared(`ensure\0${this.dir}\0${key}\0${o.scope ?? ""}`, async () => {
      const from: Filled = (await this.has(key)) ? "cache" : await this.fill(key, compiler, source, o.fetch);
      return { key, from, published: o.publish ? await o.publish(key, from) : undefined };
    });
  }

  /** A miss: fetched or compiled, then written. One at a time per directory and key, whatever the callers' scopes. */
  private fill(
    key: string,
    compiler: Compiler,
    source: Uint8Array,
    fetch: EnsureOptions<unknown>["fetch"],
  ): Promise<"fetched" | "compiled"> {
    return shared(`fill\0${this.dir}\0${key}`, async () => {
      const fetched = await fetch?.(key);
      if (fetched) {
        await this.put(key, fetched);
        return "fetched";
      }
      await this.put(key, await compiler.compile(source));
      return "compiled";
    });
  }

  private path(key: string): string {
    if (!/^[A-Za-z0-9._-]+$/.test(key)) throw new Error(`bad cache key ${key}`);
    return join(this.dir, key + SUFFIX);
  }

  /**
   * Whether `key` is cached. Synchronous inside (one access(2)): a shim server asks on every
   * Create of a wasm container (docs/ARCHITECTURE.md, "Bun's thread pool").
   * put() stays asynchronous: it runs once per module and node, on a miss.
   */
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
    const { mkdir, rename, unlink, writeFile } = await fsp();
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${p}${TMP_MARK}${process.pid}-${Math.random().toString(36).slice(2)}`;
    try {
      // "wx": a tmp name is never shared, not even by a pid reused after a crash.
      await writeFile(tmp, bytes, { mode: 0o600, flag: "wx" });
      await rename(tmp, p);
    } catch (e) {
      // Not a tmp file of someone else's that happened to have our name.
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") await unlink(tmp).catch(() => {});
      throw e;
    }
    await this.evict();
  }

  async delete(key: string): Promise<void> {
    const { unlink } = await fsp();
    await unlink(this.path(key)).catch(() => {});
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
    const { readdir, stat, unlink } = await fsp();
    for (const name of await readdir(this.dir)) {
      const p = join(this.dir, name);
      const st = await stat(p).catch(() => null);
      if (st === null) continue;
      if (name.includes(TMP_MARK)) {
        if (now - st.mtimeMs > 10 * 60_000) await unlink(p).catch(() => {});
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
      await unlink(e.p).catch(() => {});
      total -= e.size;
    }
  }

  /** Total bytes of cached artifacts. */
  async size(): Promise<number> {
    let total = 0;
    const { readdir, stat } = await fsp();
    for (const name of await readdir(this.dir)) {
      if (!name.endsWith(SUFFIX)) continue;
      total += (await stat(join(this.dir, name)).catch(() => ({ size: 0 }))).size;
    }
    return total;
  }
}
