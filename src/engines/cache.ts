// Compile cache: serialized (precompiled) modules on disk, each loaded only if this node
// compiled it (docs/ARCHITECTURE.md, "Compiled code we trust").
//
// Key = sha256(module bytes) + engine name + engine/library version + config flags. An entry is
// two files: `<key>.cwasm`, the artifact (what the engine maps), and `<key>.mac`, an HMAC under
// the node's key (./node-key.ts) over the key and the artifact's bytes. check() is what a
// deserialize is preceded by: the directory and the file are ours and writable by no one else,
// and the MAC verifies over the bytes of the file it opened (its fd is handed on, so what is
// mapped is what was checked). A forged or damaged entry, or one someone else could have
// changed, is a miss: the module is compiled again and the entry replaced.
//
// Writes are asynchronous (a write of a few MiB must not hold up the other pods' calls on a
// server's thread) and atomic: each writer has its own tmp files and renames them into place,
// the artifact first, so readers see a whole artifact or none. A reader that meets an artifact
// and a MAC of two writers (another process renamed between them) looks once more. Total size
// is bounded: after a write, the oldest entries (by mtime; a hit refreshes mtime) are evicted
// until under the limit.
//
// Files: the directory 0700, artifacts 0644 (a container's executor maps its own one through
// a read-only bind of that one file, as the container's user), MACs 0600, all the owner's.

import {
  chmodSync,
  closeSync,
  constants,
  fstatSync,
  futimesSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  utimesSync,
} from "node:fs";
import { join } from "node:path";
import type { Compiler } from "./engine.ts";
import { NodeKey } from "./node-key.ts";

// node:fs/promises is imported on first use, not with this module: a shim server imports the
// cache but writes to it once per module and node (docs/ARCHITECTURE.md, "Bun's thread pool").
const fsp = () => import("node:fs/promises");

/** Where the entry came from in one ensure(): already there, fetched from elsewhere, or compiled now. */
export type Filled = "cache" | "fetched" | "compiled";

export interface EnsureOptions<T> {
  /**
   * Compiled bytes kept somewhere else (an artifact's compile in containerd's content store),
   * asked on a miss before compiling; undefined when there are none worth taking. Trusted as
   * they are: check them (CompileCache.mac) before returning them.
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
  /** The entry's artifact, checked (or written) by this ensure. */
  file: string;
  /** Why the entry that was there was not used (then compiled or fetched again). */
  rejected?: string;
  /** What publish returned (undefined without one). */
  published: T | undefined;
}

/** An entry check() found good: its file is open, so that what is loaded is what was checked. */
export interface CheckedEntry {
  key: string;
  /** The artifact's path in the cache. */
  file: string;
  /** The open file as a path (/proc/self/fd/N): maps the checked bytes whatever is renamed over `file` since. */
  fdPath: string;
  /** The MAC that verified (hex). */
  mac: string;
  /** The artifact's bytes, when check() was asked to read them. */
  bytes?: Uint8Array;
  /** Closes the file; once the engine has loaded it. */
  close(): void;
}

/** check()'s answer: the entry, or why not (no reason: there is none). */
export type Checked = { entry: CheckedEntry; rejected?: undefined } | { entry?: undefined; rejected?: string };

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
  /**
   * The node's key (./node-key.ts), made on first use if missing: every entry is written with
   * its MAC under it and loaded only when that verifies. Default `<dir>.key`
   * (/var/lib/bunwasi/cache.key). null: entries without MACs, for bytes checked another way
   * (an artifact's layers, checked against their digest on every use); never for compiled code.
   */
  keyFile?: string | null;
}

const SUFFIX = ".cwasm";
const MAC_SUFFIX = ".mac";
const TMP_MARK = ".tmp-";
/** Bytes hashed per turn of the event loop by keyInSlices and the MAC checks: about 1 ms of sha256 here. */
export const HASH_SLICE = 1 << 20;
/** Bytes read per read(2) while a file is checked. */
const READ_CHUNK = 256 << 10;

function keyOf(digest: string, engine: string, version: string, flags: string): string {
  const meta = new Bun.CryptoHasher("sha256").update(`${engine}\0${version}\0${flags}`).digest("hex").slice(0, 16);
  return `${digest}-${engine}-${meta}`;
}

const nextTurn = () => new Promise<void>((r) => setImmediate(r));
const euid = () => process.geteuid?.() ?? 0;

/** Hex strings compared in time independent of where they differ. */
function sameHex(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return d === 0;
}

export class CompileCache {
  readonly dir: string;
  readonly maxBytes: number;
  readonly keyFile: string | null;
  private dirReady = false;

  constructor(opts: CompileCacheOptions) {
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes ?? 512 * 1024 * 1024;
    this.keyFile = opts.keyFile === undefined ? `${opts.dir}.key` : opts.keyFile;
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
      if (at > 0) await nextTurn();
      h.update(module.subarray(at, at + HASH_SLICE));
    }
    return keyOf(h.digest("hex"), engine, version, flags);
  }

  /**
   * The one way to compile a module into the cache: makes sure the cache holds `source` as
   * `compiler` compiles it, checked, and returns its key and file. A hit costs the key's hash
   * and the entry's check (an HMAC over the artifact). On a miss (or an entry that does not
   * check), `o.fetch` is asked first, then the compiler runs (off this thread) and the artifact
   * is written. Callers that ask for one key while that runs (the replicas of a pod, many pods
   * of one image in the daemon) share it: one compile and one write. A compile error rejects
   * every caller that shared it, and the next ensure tries again.
   */
  async ensure<T = undefined>(compiler: Compiler, source: Uint8Array, o: EnsureOptions<T> = {}): Promise<Ensured<T>> {
    const key = await compiler.cacheKey(source);
    return shared(`ensure\0${this.dir}\0${key}\0${o.scope ?? ""}`, async () => {
      const checked = await this.check(key);
      checked.entry?.close();
      const from: Filled = checked.entry ? "cache" : await this.fill(key, compiler, source, o.fetch);
      return {
        key,
        from,
        file: this.fileOf(key),
        ...(checked.rejected ? { rejected: checked.rejected } : {}),
        published: o.publish ? await o.publish(key, from) : undefined,
      };
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

  /** The artifact's path of `key` (whether or not it is there). */
  fileOf(key: string): string {
    if (!/^[A-Za-z0-9._-]+$/.test(key)) throw new Error(`bad cache key ${key}`);
    return join(this.dir, key + SUFFIX);
  }

  private macFileOf(key: string): string {
    return join(this.dir, key + MAC_SUFFIX);
  }

  /**
   * The directory, made if `create` (0700), and why it cannot be trusted if it cannot: not a
   * directory, or not ours. Another mode of ours (an older install's 0755) is made 0700 once.
   * Undefined when it is fine, or missing and not to be made.
   */
  private secureDir(create: boolean): string | undefined {
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      if (!create) return undefined;
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      st = lstatSync(this.dir);
    }
    if (!st.isDirectory()) return `${this.dir} is not a directory`;
    if (st.uid !== euid()) return `the cache directory ${this.dir} is owned by uid ${st.uid}`;
    if ((st.mode & 0o077) !== 0) {
      // Others could replace an entry between its check and its use.
      if (this.dirReady) return `the cache directory ${this.dir} has mode ${(st.mode & 0o777).toString(8)}`;
      chmodSync(this.dir, 0o700);
    }
    this.dirReady = true;
    return undefined;
  }

  /**
   * Whether `key`'s entry may be loaded, checked now (synchronous file calls, a turn of the
   * event loop every HASH_SLICE bytes hashed): the directory and the artifact are ours and
   * writable by no one else, the artifact a regular file (not followed through a link), and
   * the MAC beside it verifies over its bytes. The answer holds the file open: load it through
   * `fdPath`, then close it. A cache without a key (keyFile null) has nothing to check with.
   */
  async check(key: string, o: { read?: boolean } = {}): Promise<Checked> {
    if (this.keyFile === null) throw new Error(`the cache ${this.dir} has no key: nothing in it is loaded as code`);
    const file = this.fileOf(key);
    const dirProblem = this.secureDir(false);
    if (dirProblem) return { rejected: dirProblem };
    for (let attempt = 0; ; attempt++) {
      let fd: number;
      try {
        fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "ENOENT" || code === "ENOTDIR") return {};
        if (code === "ELOOP") return { rejected: "it is a symbolic link" };
        throw e;
      }
      let keep = false;
      try {
        const st = fstatSync(fd);
        if (!st.isFile()) return { rejected: "not a regular file" };
        if (st.uid !== euid()) return { rejected: `owned by uid ${st.uid}` };
        if ((st.mode & 0o022) !== 0) return { rejected: `mode ${(st.mode & 0o777).toString(8)}` };
        const h = NodeKey.at(this.keyFile).hasher(key);
        let bytes: Uint8Array | undefined;
        if (o.read) {
          bytes = new Uint8Array(st.size);
          for (let at = 0; at < st.size; ) {
            const n = readSync(fd, bytes, at, st.size - at, at);
            if (n === 0) return { rejected: "it shrank while read" };
            at += n;
          }
          for (let at = 0; at < bytes.length; at += HASH_SLICE) {
            if (at > 0) await nextTurn();
            h.update(bytes.subarray(at, at + HASH_SLICE));
          }
        } else {
          const buf = new Uint8Array(READ_CHUNK);
          let since = 0;
          for (let at = 0; ; ) {
            const n = readSync(fd, buf, 0, READ_CHUNK, at);
            if (n === 0) break;
            h.update(buf.subarray(0, n));
            at += n;
            since += n;
            if (since >= HASH_SLICE) {
              since = 0;
              await nextTurn();
            }
          }
        }
        const mac = h.digest("hex");
        let stored: string;
        try {
          stored = readFileSync(this.macFileOf(key), "utf8").trim();
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
          stored = "";
        }
        if (!sameHex(mac, stored)) {
          // Another writer may have renamed its artifact and MAC between our open and our read.
          if (attempt === 0) continue;
          return { rejected: stored ? "its MAC does not verify" : "it has no MAC" };
        }
        try {
          // A hit refreshes the entry for eviction (least recently used goes first).
          const now = new Date();
          futimesSync(fd, now, now);
        } catch {}
        keep = true;
        const fdPath = `/proc/self/fd/${fd}`;
        let open = true;
        return {
          entry: {
            key,
            file,
            fdPath,
            mac,
            ...(bytes ? { bytes } : {}),
            close: () => {
              if (open) closeSync(fd);
              open = false;
            },
          },
        };
      } finally {
        if (!keep) closeSync(fd);
      }
    }
  }

  /** The MAC (hex) of `bytes` as `key`'s artifact under the node's key, hashed in slices. */
  async mac(key: string, bytes: Uint8Array): Promise<string> {
    if (this.keyFile === null) throw new Error(`the cache ${this.dir} has no key`);
    const h = NodeKey.at(this.keyFile).hasher(key);
    for (let at = 0; at < bytes.length; at += HASH_SLICE) {
      if (at > 0) await nextTurn();
      h.update(bytes.subarray(at, at + HASH_SLICE));
    }
    return h.digest("hex");
  }

  /** A cache without a key (keyFile null): the bytes of `key`, or undefined. Check them before use. */
  get(key: string): Uint8Array | undefined {
    if (this.keyFile !== null) throw new Error(`the cache ${this.dir} has a key: read it with check()`);
    const p = this.fileOf(key);
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

  /** Writes of one key in this process, one after the other: so one writer's artifact and MAC end up together. */
  private readonly writing = new Map<string, Promise<void>>();

  /** Stores `bytes` under `key` (with their MAC): resolves once the entry is in place (and the cache bounded again). */
  put(key: string, bytes: Uint8Array): Promise<void> {
    const before = this.writing.get(key) ?? Promise.resolve();
    const p = before.catch(() => {}).then(() => this.write(key, bytes));
    this.writing.set(key, p);
    void p
      .finally(() => {
        if (this.writing.get(key) === p) this.writing.delete(key);
      })
      .catch(() => {});
    return p;
  }

  private async write(key: string, bytes: Uint8Array): Promise<void> {
    const p = this.fileOf(key);
    const mac = this.keyFile === null ? undefined : await this.mac(key, bytes);
    const { rename, unlink, writeFile } = await fsp();
    const dirProblem = this.secureDir(true);
    if (dirProblem) throw new Error(dirProblem);
    const tag = `${TMP_MARK}${process.pid}-${Math.random().toString(36).slice(2)}`;
    const tmp = `${p}${tag}`;
    const macTmp = `${this.macFileOf(key)}${tag}`;
    try {
      // "wx": a tmp name is never shared, not even by a pid reused after a crash.
      await writeFile(tmp, bytes, { mode: 0o644, flag: "wx" });
      if (mac !== undefined) await writeFile(macTmp, `${mac}\n`, { mode: 0o600, flag: "wx" });
      await rename(tmp, p);
      if (mac !== undefined) await rename(macTmp, this.macFileOf(key));
    } catch (e) {
      // Not a tmp file of someone else's that happened to have our name.
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") {
        await unlink(tmp).catch(() => {});
        await unlink(macTmp).catch(() => {});
      }
      throw e;
    }
    await this.evict();
  }

  async delete(key: string): Promise<void> {
    const { unlink } = await fsp();
    await unlink(this.fileOf(key)).catch(() => {});
    await unlink(this.macFileOf(key)).catch(() => {});
  }

  /**
   * Removes the oldest entries until the total is within maxBytes, and tmp files older than
   * 10 minutes (a writer that died) and MACs whose artifact is gone. One scan at a time per
   * cache: writes that end while one runs share the next.
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
    const entries: { key: string; size: number; mtime: number }[] = [];
    const macs: { key: string; mtime: number }[] = [];
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
      if (name.endsWith(MAC_SUFFIX)) macs.push({ key: name.slice(0, -MAC_SUFFIX.length), mtime: st.mtimeMs });
      if (!name.endsWith(SUFFIX)) continue;
      entries.push({ key: name.slice(0, -SUFFIX.length), size: st.size, mtime: st.mtimeMs });
      total += st.size;
    }
    const artifacts = new Set(entries.map((e) => e.key));
    for (const m of macs) if (!artifacts.has(m.key) && now - m.mtime > 10 * 60_000) await unlink(this.macFileOf(m.key)).catch(() => {});
    if (total <= this.maxBytes) return;
    entries.sort((a, b) => a.mtime - b.mtime);
    for (const e of entries) {
      if (total <= this.maxBytes) break;
      await this.delete(e.key);
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
