// A path opened inside a directory tree as the kernel would resolve it with that directory as
// "/": an absolute symlink restarts at the root, ".." never climbs above it, and nothing is
// followed out of it (openat2's RESOLVE_IN_ROOT, done here one component at a time so that it
// works on kernels before 5.6 too). Each step is relative to a file descriptor this walk holds
// (through /proc/self/fd/N, which names that very directory), never to a path, so renaming or
// swapping a component meanwhile cannot lead it elsewhere. Every step is O_PATH: it opens no
// device and waits on no fifo, and the caller decides from the final fd's fstat whether to open
// the file for real (through /proc/self/fd/N again: the same inode). Synchronous: a few opens,
// microseconds each, where asynchronous calls would start Bun's thread pool
// (docs/ARCHITECTURE.md, "Bun's thread pool").

import { closeSync, constants, fstatSync, openSync, readlinkSync } from "node:fs";

/** O_PATH: the same value on x86_64 and aarch64 (Node does not export it). */
export const O_PATH = 0o10000000;
/** More symlinks than this in one resolution is a loop (the kernel's ELOOP bound). */
const MAX_LINKS = 40;

export class InRootError extends Error {
  override name = "InRootError";
  constructor(
    message: string,
    /** ENOENT, ENOTDIR, ELOOP: what the kernel would have said. */
    readonly code: "ENOENT" | "ENOTDIR" | "ELOOP",
  ) {
    super(message);
  }
}

/** The name /proc gives an open fd: opening it opens that same file, whatever its path is now. */
export function fdPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

/**
 * An O_PATH fd of `path` (absolute or relative, taken from `root`) resolved inside `root`;
 * the final symlink is followed (inside `root` too). The caller closes it. Throws InRootError
 * when a component is missing, a non-directory has components below it, or links loop;
 * whatever `root` itself is, it is opened as given.
 */
export function openInRoot(root: string, path: string): number {
  const dirs: number[] = [openSync(root, O_PATH | constants.O_DIRECTORY)];
  const closeAll = () => {
    for (const fd of dirs) closeQuietly(fd);
  };
  const todo = path.split("/").filter(Boolean);
  let links = 0;
  try {
    while (todo.length) {
      const part = todo.shift() as string;
      if (part === ".") continue;
      if (part === "..") {
        // At the root this is a no-op: no escape.
        if (dirs.length > 1) closeQuietly(dirs.pop() as number);
        continue;
      }
      const at = `${fdPath(dirs[dirs.length - 1] as number)}/${part}`;
      let fd: number;
      try {
        fd = openSync(at, O_PATH | constants.O_NOFOLLOW);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "ENOENT" || code === "ENOTDIR") throw new InRootError(`${path}: no such file`, code);
        throw e;
      }
      const st = fstatSync(fd);
      if (st.isSymbolicLink()) {
        let target: string;
        try {
          target = readlinkSync(at);
        } finally {
          closeQuietly(fd);
        }
        if (++links > MAX_LINKS) throw new InRootError(`${path}: too many levels of symbolic links`, "ELOOP");
        if (target.startsWith("/")) while (dirs.length > 1) closeQuietly(dirs.pop() as number);
        todo.unshift(...target.split("/").filter(Boolean));
        continue;
      }
      if (todo.length && !st.isDirectory()) {
        closeQuietly(fd);
        throw new InRootError(`${path}: not a directory on the way`, "ENOTDIR");
      }
      dirs.push(fd);
    }
    // The last one opened is the answer (the root itself when the path named nothing else).
    const out = dirs.pop() as number;
    closeAll();
    return out;
  } catch (e) {
    closeAll();
    throw e;
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}
