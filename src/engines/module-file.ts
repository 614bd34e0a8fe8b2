// The module file, opened the one way every reader opens it: the plan's Create (its head, then
// the compile), the executor's start inside the container and the daemon's Start
// (docs/ARCHITECTURE.md, "The module file"). It is resolved inside a root directory (the
// container's rootfs or a volume's source at Create, the module's view at Start) without
// following links out of it (../linux/open-in-root.ts), looked at through an O_PATH fd, and
// opened for reading only when that is a regular file of at most MODULE_MAX_BYTES: a symlink
// to /dev/zero, a fifo or a sparse file of a terabyte swapped in for the module fails with a
// message naming what it is, and nothing is read from it. Reads are bounded by the same cap,
// whatever the file grows to meanwhile. An attacker who can swap the file gets that error, not
// a hung or flooded reader.

import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from "node:fs";
import { MODULE_MAX_BYTES } from "../common/constants.ts";
import { fdPath, InRootError, openInRoot } from "../linux/open-in-root.ts";

export { MODULE_MAX_BYTES };

export class ModuleFileError extends Error {
  override name = "ModuleFileError";
}

/** What a non-regular file is, for the error message. */
function kindOf(st: Stats): string {
  if (st.isDirectory()) return "a directory";
  if (st.isFIFO()) return "a fifo";
  if (st.isSocket()) return "a socket";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  return "not a regular file";
}

/** Throws unless `st` is a regular file of at most `maxBytes`: what every reader checks first. */
function checkModuleStat(st: Stats, shown: string, maxBytes: number): void {
  if (!st.isFile()) throw new ModuleFileError(`${shown}: ${kindOf(st)}, not a module file`);
  if (st.size > maxBytes) throw new ModuleFileError(`${shown}: ${st.size} bytes, more than a module may have (${maxBytes})`);
}

/** How a module file is opened for reading: never waiting (a fifo in its place), never our terminal. */
const READ_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;

/**
 * `path` inside `root`, opened for reading (non-blocking, so no open can wait) once it is
 * known to be a regular file of at most `maxBytes`: its fd (the caller closes it) and size.
 * `shown` names the file in errors (the container's path). Throws ModuleFileError.
 */
export function openModuleFile(root: string, path: string, shown = path, maxBytes = MODULE_MAX_BYTES): { fd: number; size: number } {
  let pathFd: number;
  try {
    pathFd = openInRoot(root, path);
  } catch (e) {
    if (e instanceof InRootError)
      throw new ModuleFileError(`${shown}: ${e.code === "ELOOP" ? "too many levels of symbolic links" : "no such file"}`);
    throw new ModuleFileError(`${shown}: ${(e as Error).message}`);
  }
  try {
    const st = fstatSync(pathFd);
    checkModuleStat(st, shown, maxBytes);
    // The O_PATH fd's own file: the inode just checked, whatever the path names by now.
    const fd = openSync(fdPath(pathFd), READ_FLAGS);
    return { fd, size: st.size };
  } finally {
    closeSync(pathFd);
  }
}

/**
 * Reads the whole of an fd from openModuleFile, from its start, on this thread: at most
 * `maxBytes`, a file that has grown past them meanwhile fails.
 */
export function readModuleFileSync(fd: number, shown: string, maxBytes = MODULE_MAX_BYTES): Uint8Array {
  const st = fstatSync(fd);
  checkModuleStat(st, shown, maxBytes);
  const buf = sizedBuffer(st.size);
  let n = 0;
  for (let got = -1; got !== 0; n += got) {
    got = readSync(fd, buf, n, buf.length - n, n);
    grewCheck(buf, n + got, shown);
  }
  return buf.subarray(0, n);
}

/** One byte more than the size: a file still growing shows as longer than it said. */
const sizedBuffer = (size: number) => new Uint8Array(size + 1);

function grewCheck(buf: Uint8Array, n: number, shown: string): void {
  if (n === buf.length) throw new ModuleFileError(`${shown}: grew while it was read (more than ${buf.length - 1} bytes)`);
}

/** A module file read whole: openModuleFile then readModuleFileSync. */
export function readModuleSync(root: string, path: string, shown = path, maxBytes = MODULE_MAX_BYTES): Uint8Array {
  const { fd } = openModuleFile(root, path, shown, maxBytes);
  try {
    return readModuleFileSync(fd, shown, maxBytes);
  } finally {
    closeSync(fd);
  }
}

/**
 * A module named by a path already checked by its caller (an fd of openModuleFile through
 * /proc/self/fd) or any path: opened without waiting, read only if a regular file, within the
 * cap. The engine's own read, for whoever calls it with a path.
 */
export function readModulePathSync(path: string, maxBytes = MODULE_MAX_BYTES): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, READ_FLAGS);
  } catch (e) {
    throw new ModuleFileError(`${path}: ${(e as Error).message}`);
  }
  try {
    return readModuleFileSync(fd, path, maxBytes);
  } finally {
    closeSync(fd);
  }
}

/**
 * readModulePathSync on Bun's thread pool: the daemon's, whose main thread serves every pod
 * (the executor and a shim server read synchronously, docs/ARCHITECTURE.md "Bun's thread
 * pool"; node:fs/promises is loaded only here, for them never).
 */
export async function readModulePath(path: string, maxBytes = MODULE_MAX_BYTES): Promise<Uint8Array> {
  const fh = await (await import("node:fs/promises")).open(path, READ_FLAGS).catch((e: Error) => {
    throw new ModuleFileError(`${path}: ${e.message}`);
  });
  try {
    const st = await fh.stat();
    checkModuleStat(st, path, maxBytes);
    const buf = sizedBuffer(st.size);
    let n = 0;
    for (let got = -1; got !== 0; n += got) {
      got = (await fh.read(buf, n, buf.length - n, n)).bytesRead;
      grewCheck(buf, n + got, path);
    }
    return buf.subarray(0, n);
  } finally {
    await fh.close();
  }
}

/** The first `n` bytes of an fd from openModuleFile (what an engine sniffs). */
export function readHeadOf(fd: number, n = 4096): Uint8Array {
  const b = new Uint8Array(n);
  return b.subarray(0, readSync(fd, b, 0, n, 0));
}
