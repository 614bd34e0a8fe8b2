// The host directory that a wasm container sees read-only at /.bunwasi (docs/ARCHITECTURE.md,
// "Pitfalls": the loader trick).
//
// A wasm image's rootfs has no libc and no dynamic loader, so our (dynamically linked) executor
// cannot be exec'd there directly. Instead the container process is
//   /.bunwasi/ld-linux-x86-64.so.2 --library-path /.bunwasi /.bunwasi/<executor> …
// and this directory holds everything that needs: the executor binary, the engine's files
// (Engine.executor(): e.g. its native library), the loader and the shared libraries `ldd` lists
// for the binary and the engine's shared objects (copied as files: symlinks would point outside
// the mount).
//
// The directory name is a hash of the inputs' identities (path, size, mtime, inode), so a new
// shim or engine library gets a new directory while running containers keep theirs. It is built
// in a temp dir and renamed into place, so concurrent shims never see a half-built one.
//
// The executor binary is the shim binary itself (a `bun build --compile` binary whose entry
// dispatches `executor …`, see src/shim/shim.ts). Running from source there is no such binary:
// give one (opts.executor, or BUNWASI_EXECUTOR=path of a built shim; scripts/build-shim.sh).

//
// File access here is synchronous (a few stats, links and small files, once per install), and
// ldd's output goes through a memfd, not a pipe (docs/ARCHITECTURE.md, "Bun's thread pool").

import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  type Stats,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, join } from "node:path";
import { isCompiled } from "../common/compiled.ts";
import type { Engine } from "../engines/engine.ts";
import { memfd, readAll } from "../linux/memfd.ts";

/** Where the directory is mounted inside the container. */
export const EXECUTOR_MOUNT = "/.bunwasi";
export const LOADER_NAME = "ld-linux-x86-64.so.2";
const DONE_MARK = ".complete";

export interface ExecutorBinary {
  /** Host path of the binary. */
  path: string;
  /** Arguments that select executor mode, placed before the executor flags ([] or ["executor"]). */
  subcommand: string[];
  /**
   * Its file name in the executor directory (default: the path's). A binary of several
   * programs picks one by the name it is started as: this names the program that has the
   * executor, whatever the file's own name.
   */
  name?: string;
}

export interface ExecutorDir {
  /** Host path of the directory (bind-mount source). */
  dir: string;
  /** File name of the executor binary inside `dir`. */
  binaryName: string;
  subcommand: string[];
  /** The engine's executor options (Engine.executor().options), passed as --engine-opt. */
  engineOptions: Record<string, string>;
  /** File names inside `dir` (for logs/tests). */
  files: string[];
}

export interface ExecutorDirOptions {
  /** The engine whose files the executor needs. */
  engine: Engine;
  /** Parent of the exec/ directories; default $BUNWASI_EXEC_ROOT, else /var/lib/bunwasi. */
  stateRoot?: string;
  /** Use this executor binary (default: executorBinary()). */
  executor?: ExecutorBinary;
}

/** The executor binary for this installation: the compiled shim itself, or BUNWASI_EXECUTOR. */
export function executorBinary(): ExecutorBinary {
  // "executor" first: the binary is a shim whose entry dispatches on it.
  if (process.env.BUNWASI_EXECUTOR) return { path: process.env.BUNWASI_EXECUTOR, subcommand: ["executor"] };
  // A binary replaced on disk (an upgrade under a running shim) is still readable through
  // /proc/self/exe, though its old path is gone. Its name is the one this process was started
  // as (the shim's: `start` starts the server under it, src/shim/command-line.ts), not the
  // file's: process.execPath resolves a symbolic link to the one binary (src/bin/bunwasi.ts).
  if (isCompiled)
    return {
      path: existsSync(process.execPath) ? process.execPath : "/proc/self/exe",
      subcommand: ["executor"],
      name: basename(process.argv0),
    };
  throw new Error("running from source, there is no executor binary: build the shim (scripts/build-shim.sh) and set BUNWASI_EXECUTOR");
}

/** Shared libraries (name → host path) that `ldd` lists for `file`, the loader included. */
export async function sharedLibs(file: string): Promise<Map<string, string>> {
  const { text, code } = await outputOf(["ldd", file]);
  if (code !== 0) throw new Error(`ldd ${file} failed: ${text}`);
  const libs = new Map<string, string>();
  for (const line of text.split("\n")) {
    // "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "\t/lib64/ld-linux-x86-64.so.2 (0x…)"
    let m = /^\s*(\S+)\s+=>\s+(\/\S+)\s+\(/.exec(line);
    if (m) {
      libs.set(m[1] as string, m[2] as string);
      continue;
    }
    m = /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.set(basename(m[1] as string), m[1] as string);
    else if (/=>\s+not found/.test(line)) throw new Error(`ldd ${file}: ${line.trim()}`);
  }
  return libs;
}

/** Runs `argv` and returns its stdout and stderr together, through a memfd (no pipes). */
async function outputOf(argv: string[]): Promise<{ text: string; code: number }> {
  const fd = memfd(basename(argv[0] ?? "out"));
  try {
    const code = await Bun.spawn(argv, { stdin: "ignore", stdout: fd, stderr: fd }).exited;
    return { text: readAll(fd), code };
  } finally {
    closeSync(fd);
  }
}

/** The file behind `p`; /proc/self/exe of a deleted binary is itself the way to read it. */
function resolved(p: string): string {
  try {
    const real = realpathSync(p);
    statSync(real);
    return real;
  } catch {
    return p;
  }
}

function identity(p: string): string {
  const real = resolved(p);
  const st = statSync(real);
  return `${real}:${st.size}:${st.mtimeMs}:${st.ino}`;
}

/** Hard link when on the same filesystem (no copy of a 100 MB binary), else copy. */
function place(src: string, dst: string, mode: number): void {
  const real = resolved(src);
  try {
    linkSync(real, dst);
    // a hard link shares the inode: leave the source's mode alone if it is already usable
    if ((statSync(dst).mode & 0o555) !== 0o555) chmodSync(dst, mode);
    return;
  } catch {
    // EXDEV (other filesystem) or EPERM (protected_hardlinks): copy. Synchronous too: this
    // happens once per install and node, and copy_file_range keeps it short.
  }
  copyFileSync(real, dst);
  chmodSync(dst, mode);
}

function complete(dir: string): boolean {
  try {
    statSync(join(dir, DONE_MARK));
    return true;
  } catch {
    return false;
  }
}

// One look at the inputs per engine and install: later calls only check the directory is there.
const known = new WeakMap<Engine, Map<string, ExecutorDir>>();

/** Build (once) and return the executor directory for the executor binary + the engine's files. */
export async function ensureExecutorDir(opts: ExecutorDirOptions): Promise<ExecutorDir> {
  // On disk, not tmpfs: the ~140 MB of binaries are hard-linked from the install when they
  // share a filesystem, and are never copied into RAM.
  const stateRoot = opts.stateRoot ?? process.env.BUNWASI_EXEC_ROOT ?? "/var/lib/bunwasi";
  const exe = opts.executor ?? executorBinary();
  const memoKey = `${stateRoot}\0${exe.path}\0${exe.name ?? ""}\0${exe.subcommand.join(" ")}`;
  const memo = known.get(opts.engine)?.get(memoKey);
  if (memo && complete(memo.dir)) return memo;

  const needs = opts.engine.executor();
  const binaryName =
    exe.name ??
    (exe.subcommand.length
      ? basename(exe.path === "/proc/self/exe" ? process.execPath.replace(/ \(deleted\)$/, "") : exe.path)
      : "bunwasi-executor");
  for (const f of needs.files) {
    if (f.name === binaryName || f.name === LOADER_NAME || f.name.includes("/") || f.name.startsWith(".")) {
      throw new Error(`engine ${opts.engine.name}: cannot ship a file named ${f.name} in the executor directory`);
    }
  }
  const ids = needs.files.map((f) => `${f.name}=${identity(f.source)}`);
  const inputs = [identity(exe.path), ...ids, binaryName, process.arch];
  // Bun's hasher: node:crypto costs the server about 1.3 MiB of JS heap (measured).
  const hash = new Bun.CryptoHasher("sha256").update(inputs.join("\n")).digest("hex").slice(0, 16);
  const parent = join(stateRoot, "exec");
  const dir = join(parent, hash);
  const result = (): ExecutorDir => {
    const out = {
      dir,
      binaryName,
      subcommand: exe.subcommand,
      engineOptions: { ...(needs.options ?? {}) },
      files: readdirSync(dir).filter((f) => f !== DONE_MARK),
    };
    if (!known.has(opts.engine)) known.set(opts.engine, new Map());
    known.get(opts.engine)?.set(memoKey, out);
    return out;
  };
  if (complete(dir)) return result();

  mkdirSync(parent, { recursive: true, mode: 0o711 });
  const tmp = join(parent, `.tmp-${hash}-${process.pid}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(tmp, { mode: 0o755 });
  try {
    place(exe.path, join(tmp, binaryName), 0o755);
    const libs = new Map(await sharedLibs(exe.path));
    for (const f of needs.files) {
      place(f.source, join(tmp, f.name), f.sharedObject ? 0o755 : 0o644);
      if (f.sharedObject) for (const [name, path] of await sharedLibs(f.source)) libs.set(name, path);
    }
    let haveLoader = false;
    for (const [name, path] of libs) {
      if (needs.files.some((f) => f.name === name)) continue;
      const dst = name.startsWith("ld-linux") ? LOADER_NAME : name;
      if (dst === LOADER_NAME) haveLoader = true;
      if (!existsSync(join(tmp, dst))) place(path, join(tmp, dst), 0o755);
    }
    if (!haveLoader) {
      // A statically linked executor would need no loader, but our args assume one.
      place(`/lib64/${LOADER_NAME}`, join(tmp, LOADER_NAME), 0o755);
    }
    writeFileSync(join(tmp, DONE_MARK), `${inputs.join("\n")}\n`);
    chmodSync(tmp, 0o755);
    try {
      renameSync(tmp, dir);
    } catch (e) {
      // another shim finished first (ENOTEMPTY/EEXIST): use theirs
      if (!complete(dir)) throw e;
      rmSync(tmp, { recursive: true, force: true });
    }
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return result();
}

/** How often, at most, one server of the node scans /proc for directories still in use. */
export const PRUNE_INTERVAL_MS = 10 * 60_000;
/** Held (a directory: mkdir is atomic) by the one server that prunes now. */
const PRUNE_LOCK = ".prune.lock";
/** Its mtime is when a server last scanned. */
const PRUNE_STAMP = ".pruned";

export interface PruneOptions {
  /** A directory younger than this stays (a container may be between Create and Start with it). */
  minAgeMs?: number;
  /** No scan if one ran within this long (PRUNE_STAMP), by this server or another. */
  intervalMs?: number;
}

/**
 * Removes executor directories left by earlier installs: each holds a ~140 MB binary that
 * is no longer the installed one. A directory stays while any process runs its binary (a
 * shim of the old version, or an executor started through its loader) or while it is
 * younger than `minAgeMs`.
 *
 * Every server calls this after it starts, so it is cheap when there is nothing to do: one
 * readdir of exec/ (and a stat per directory other than `keep`). Only when an old directory
 * is there does it scan /proc for the processes' executables, and then only one server of the
 * node at a time (PRUNE_LOCK) and once per `intervalMs` (PRUNE_STAMP). Synchronous, as
 * the rest of this file: the scan is rare and stats of /proc entries are microseconds each.
 */
export async function pruneExecutorDirs(stateRoot: string, keep: string[], o: PruneOptions = {}): Promise<string[]> {
  const minAgeMs = o.minAgeMs ?? 10 * 60_000;
  const intervalMs = o.intervalMs ?? PRUNE_INTERVAL_MS;
  const parent = join(stateRoot, "exec");
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
  const now = Date.now();
  const old: string[] = [];
  for (const name of names) {
    const p = join(parent, name);
    if (name === PRUNE_LOCK || name === PRUNE_STAMP || keep.includes(p)) continue;
    const st = statOrNull(p);
    if (st?.isDirectory() && now - st.mtimeMs >= minAgeMs) old.push(p);
  }
  if (old.length === 0) return [];
  const stamp = join(parent, PRUNE_STAMP);
  const last = statOrNull(stamp);
  if (last && now - last.mtimeMs < intervalMs) return [];
  const lock = join(parent, PRUNE_LOCK);
  if (!takeLock(lock, intervalMs)) return [];
  try {
    const running = runningExecutables();
    const removed: string[] = [];
    for (const p of old) {
      let files: string[];
      try {
        files = readdirSync(p);
      } catch {
        continue;
      }
      const ids = files.map((f) => fileIdOrEmpty(join(p, f)));
      if (ids.some((id) => running.has(id))) continue;
      rmSync(p, { recursive: true, force: true });
      removed.push(p);
    }
    writeFileSync(stamp, "");
    return removed;
  } finally {
    rmdirQuietly(lock);
  }
}

function statOrNull(p: string): Stats | null {
  try {
    return statSync(p);
  } catch {
    return null;
  }
}

function rmdirQuietly(p: string): void {
  try {
    rmdirSync(p);
  } catch {}
}

/** mkdir as a lock; one left by a server that died (older than `staleMs`) is taken over. */
function takeLock(lock: string, staleMs: number): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      mkdirSync(lock);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const st = statOrNull(lock);
      if (st && Date.now() - st.mtimeMs < staleMs) return false;
      rmdirQuietly(lock);
    }
  }
  return false;
}

function fileId(path: string): string {
  const st = statSync(path);
  return `${st.dev}:${st.ino}`;
}

function fileIdOrEmpty(path: string): string {
  try {
    return fileId(path);
  } catch {
    return "";
  }
}

/** dev:inode of every running process's executable. */
function runningExecutables(): Set<string> {
  const out = new Set<string>();
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      out.add(fileId(`/proc/${pid}/exe`));
    } catch {} // gone meanwhile, or a kernel thread (no exe)
  }
  return out;
}
