// Paths inside a container's root, resolved on the host the way the kernel would resolve them
// with that root as "/": an absolute symlink target restarts at the root, ".." never climbs
// above it. An image's symlinks (or a volume's) therefore never lead the shim out of it.
// Synchronous: a few lstats, microseconds each (asynchronous fs calls would start Bun's
// thread pool, docs/ARCHITECTURE.md).

import { lstatSync, mkdirSync, readlinkSync, type Stats } from "node:fs";
import { join } from "node:path";

/** More symlinks than this in one resolution is a loop (the kernel's ELOOP bound). */
const MAX_LINKS = 40;

/**
 * Resolve `containerPath` (absolute, inside the container) to a host path under `root`.
 * Returns the host path and the container path it resolved to, or undefined if some
 * component does not exist (or a symlink loops, or a non-directory has components below it).
 */
export function resolveInRoot(root: string, containerPath: string): { host: string; path: string } | undefined {
  return walk(root, containerPath, false);
}

/**
 * Like resolveInRoot, but makes the directories that are missing (mode 0755), as runc makes
 * a mount point: every one of them inside `root`. Throws when a component exists and is not
 * a directory (or a symlink loops), saying which.
 */
export function makeDirsInRoot(root: string, containerPath: string): { host: string; path: string } {
  return walk(root, containerPath, true) as { host: string; path: string };
}

function walk(root: string, containerPath: string, create: boolean): { host: string; path: string } | undefined {
  const todo = containerPath.split("/").filter(Boolean);
  const done: string[] = [];
  let links = 0;
  while (todo.length) {
    const part = todo.shift() as string;
    if (part === ".") continue;
    if (part === "..") {
      done.pop(); // at "/" this is a no-op: no escape
      continue;
    }
    const host = join(root, ...done, part);
    let st: Stats | undefined;
    try {
      st = lstatSync(host);
    } catch {
      if (!create) return undefined;
      mkdirSync(host, { mode: 0o755 });
      st = lstatSync(host);
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) {
        if (create) throw new Error(`${containerPath}: too many levels of symbolic links`);
        return undefined;
      }
      const target = readlinkSync(host);
      if (target.startsWith("/")) done.length = 0;
      todo.unshift(...target.split("/").filter(Boolean));
      continue;
    }
    if ((todo.length || create) && !st.isDirectory()) {
      if (create) throw new Error(`${containerPath}: /${[...done, part].join("/")} is not a directory`);
      return undefined;
    }
    done.push(part);
  }
  return { host: join(root, ...done), path: `/${done.join("/")}` };
}
