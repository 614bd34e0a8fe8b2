// The host directory that a wasm container sees read-only at /.bunwasi (docs/ARCHITECTURE.md,
// "Pitfalls": the loader trick).
//
// A wasm image's rootfs has no libc and no dynamic loader, so our (dynamically linked) executor
// cannot be exec'd there directly. Instead the container process is
//   /.bunwasi/ld-linux-x86-64.so.2 --library-path /.bunwasi /.bunwasi/<executor> …
// and this directory holds everything that needs: the executor binary, libwasmtime.so (+ its
// version file, part of the compile-cache key), the loader and the shared libraries `ldd`
// lists for both (copied as files: symlinks would point outside the mount).
//
// The directory name is a hash of the inputs' identities (path, size, mtime, inode), so a new
// shim or library gets a new directory while running containers keep theirs. It is built in a
// temp dir and renamed into place, so concurrent shims never see a half-built one.
//
// Executor binary, two modes:
//  - compiled: we are a `bun build --compile` binary (the shim); the same binary is the
//    executor (its CLI must dispatch `executor …` to executorMain, see src/engines/executor.ts)
//  - dev: running from source; `bun build --compile src/engines/executor.ts` (plus the run
//    worker as a second entry point) into build/executor/, rebuilt when src/engines changes.

import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { isCompiled } from "../common/compiled.ts";
import { findLibwasmtime } from "../engines/wasmtime/ffi.ts";

/** Where the directory is mounted inside the container. */
export const EXECUTOR_MOUNT = "/.bunwasi";
export const LOADER_NAME = "ld-linux-x86-64.so.2";
const DONE_MARK = ".complete";
const REPO_ROOT = resolve(import.meta.dir, "..", "..");

export interface ExecutorBinary {
  /** Host path of the binary. */
  path: string;
  /** Arguments that select executor mode, placed before the executor flags ([] or ["executor"]). */
  subcommand: string[];
}

export interface ExecutorDir {
  /** Host path of the directory (bind-mount source). */
  dir: string;
  /** File name of the executor binary inside `dir`. */
  binaryName: string;
  subcommand: string[];
  /** File names inside `dir` (for logs/tests). */
  files: string[];
}

export interface ExecutorDirOptions {
  /** Parent of the exec/ directories; default /var/lib/bunwasi. */
  stateRoot?: string;
  /** Use this executor binary (skips mode detection). */
  executor?: ExecutorBinary;
  /** libwasmtime.so to ship; default: findLibwasmtime(). */
  libwasmtime?: string;
}

/** The executor binary for this installation (compiled: ourselves; dev: built on demand). */
export function executorBinary(): ExecutorBinary {
  if (process.env.BUNWASI_EXECUTOR) return { path: process.env.BUNWASI_EXECUTOR, subcommand: [] };
  // A binary replaced on disk (an upgrade under a running shim) is still readable through
  // /proc/self/exe, though its old path is gone.
  if (isCompiled) return { path: existsSync(process.execPath) ? process.execPath : "/proc/self/exe", subcommand: ["executor"] };
  return { path: buildDevExecutor(), subcommand: [] };
}

/**
 * `bun build --compile src/engines/executor.ts src/engines/wasmtime/worker.ts` into
 * build/executor/bunwasi-executor, unless an output newer than every file under src/engines
 * already exists. Written to a temp name and renamed: concurrent callers are safe.
 */
export function buildDevExecutor(outDir = join(REPO_ROOT, "build", "executor")): string {
  const out = join(outDir, "bunwasi-executor");
  const srcDir = join(REPO_ROOT, "src", "engines");
  const newest = newestMtime(srcDir);
  if (existsSync(out) && statSync(out).mtimeMs >= newest) return out;
  mkdirSync(outDir, { recursive: true });
  const tmp = `${out}.tmp-${process.pid}-${Date.now()}`;
  const r = Bun.spawnSync(
    [process.execPath, "build", "--compile", join(srcDir, "executor.ts"), join(srcDir, "wasmtime", "worker.ts"), "--outfile", tmp],
    { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe" },
  );
  if (r.exitCode !== 0 || !existsSync(tmp)) {
    rmSync(tmp, { force: true });
    throw new Error(`building the dev executor failed (exit ${r.exitCode}): ${r.stderr.toString()}${r.stdout.toString()}`);
  }
  renameSync(tmp, out);
  return out;
}

function newestMtime(dir: string): number {
  let m = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) m = Math.max(m, newestMtime(p));
    else if (e.name.endsWith(".ts")) m = Math.max(m, statSync(p).mtimeMs);
  }
  return m;
}

/** Shared libraries (name → host path) that `ldd` lists for `file`, the loader included. */
export function sharedLibs(file: string): Map<string, string> {
  const r = Bun.spawnSync(["ldd", file], { stdout: "pipe", stderr: "pipe" });
  const text = r.stdout.toString();
  if (r.exitCode !== 0) throw new Error(`ldd ${file} failed: ${r.stderr.toString()}${text}`);
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

/** The file behind `p`; /proc/self/exe of a deleted binary is itself the way to read it. */
function resolved(p: string): string {
  try {
    const real = realpathSync(p);
    if (existsSync(real)) return real;
  } catch {}
  return p;
}

function identity(p: string): string {
  const real = resolved(p);
  const st = statSync(real);
  return `${real}:${st.size}:${st.mtimeMs}:${st.ino}`;
}

/** Hard link when on the same filesystem (no copy of a 100 MB binary), else copy. */
function place(src: string, dst: string, mode: number) {
  const real = resolved(src);
  try {
    linkSync(real, dst);
    // a hard link shares the inode: leave the source's mode alone if it is already usable
    if ((statSync(dst).mode & 0o555) !== 0o555) chmodSync(dst, mode);
    return;
  } catch {
    // EXDEV (other filesystem) or EPERM (protected_hardlinks): copy
  }
  copyFileSync(real, dst);
  chmodSync(dst, mode);
}

/** Build (once) and return the executor directory for the current executor + libwasmtime. */
export function ensureExecutorDir(opts: ExecutorDirOptions = {}): ExecutorDir {
  // On disk, not tmpfs: the ~140 MB of binaries are hard-linked from the install when they
  // share a filesystem, and are never copied into RAM.
  const stateRoot = opts.stateRoot ?? process.env.BUNWASI_EXEC_ROOT ?? "/var/lib/bunwasi";
  const exe = opts.executor ?? executorBinary();
  const lib = opts.libwasmtime ?? findLibwasmtime();
  const libVersion = join(dirname(lib), "libwasmtime.version");
  const binaryName = exe.subcommand.length
    ? basename(exe.path === "/proc/self/exe" ? process.execPath.replace(/ \(deleted\)$/, "") : exe.path)
    : "bunwasi-executor";

  const inputs = [identity(exe.path), identity(lib), existsSync(libVersion) ? identity(libVersion) : "-", binaryName, process.arch];
  const hash = createHash("sha256").update(inputs.join("\n")).digest("hex").slice(0, 16);
  const parent = join(stateRoot, "exec");
  const dir = join(parent, hash);
  const files = () => readdirSync(dir).filter((f) => f !== DONE_MARK);
  if (existsSync(join(dir, DONE_MARK))) return { dir, binaryName, subcommand: exe.subcommand, files: files() };

  mkdirSync(parent, { recursive: true, mode: 0o711 });
  const tmp = join(parent, `.tmp-${hash}-${process.pid}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(tmp, { mode: 0o755 });
  try {
    place(exe.path, join(tmp, binaryName), 0o755);
    place(lib, join(tmp, "libwasmtime.so"), 0o755);
    if (existsSync(libVersion)) place(libVersion, join(tmp, "libwasmtime.version"), 0o644);
    const libs = new Map([...sharedLibs(exe.path), ...sharedLibs(lib)]);
    let haveLoader = false;
    for (const [name, path] of libs) {
      if (name === "libwasmtime.so") continue;
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
      if (!existsSync(join(dir, DONE_MARK))) throw e;
      rmSync(tmp, { recursive: true, force: true });
    }
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return { dir, binaryName, subcommand: exe.subcommand, files: files() };
}

/**
 * Removes executor directories left by earlier installs: each holds a ~140 MB binary that
 * is no longer the installed one. A directory stays while any process runs its binary (a
 * shim of the old version, or an executor started through its loader) or while it is
 * younger than `minAgeMs` (a container may be between Create and Start with it).
 */
export function pruneExecutorDirs(stateRoot: string, keep: string[], minAgeMs = 10 * 60_000): string[] {
  const parent = join(stateRoot, "exec");
  const removed: string[] = [];
  if (!existsSync(parent)) return removed;
  const running = runningExecutables();
  const now = Date.now();
  for (const name of readdirSync(parent)) {
    const p = join(parent, name);
    if (keep.includes(p)) continue;
    try {
      if (now - statSync(p).mtimeMs < minAgeMs) continue;
      if (readdirSync(p).some((f) => running.has(fileId(join(p, f))))) continue;
    } catch {
      continue;
    }
    rmSync(p, { recursive: true, force: true });
    removed.push(p);
  }
  return removed;
}

function fileId(path: string): string {
  const st = statSync(path);
  return `${st.dev}:${st.ino}`;
}

/** dev:inode of every running process's executable. */
function runningExecutables(): Set<string> {
  const out = new Set<string>();
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      out.add(fileId(`/proc/${pid}/exe`));
    } catch {}
  }
  return out;
}
