// A task's stdio fifos as containerd makes them, for unit tests of what reads and writes them
// (the daemon's stdin relay, its in-process instance), and which of this process's fds are
// still open on one afterwards. Both ends are opened by the test, so that no open blocks for
// want of the other end.
import { constants, openSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { mkfifo } from "../../src/linux/libc.ts";

/** Makes fifos in `dir`, a new name each call (out-0, out-1, ...). */
export function fifoMaker(dir: string): () => string {
  let n = 0;
  return () => {
    const p = join(dir, `out-${n++}`);
    const [r, e] = mkfifo(p);
    if (r !== 0) throw new Error(`mkfifo ${p}: errno ${e}`);
    return p;
  };
}

/** containerd's stdin fifo at `path`: the runtime's read end and containerd's write end, both non-blocking. */
export function stdinFifo(path: string): { reader: number; writer: number } {
  mkfifo(path);
  const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  return { reader, writer: openSync(path, constants.O_WRONLY | constants.O_NONBLOCK) };
}

/**
 * containerd's output fifo at `path`: its read end (non-blocking) and the end the Task service
 * opens read-write and hands the runtime (src/task/stdio.ts).
 */
export function outputFifo(path: string): { reader: number; writer: number } {
  mkfifo(path);
  const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  return { reader, writer: openSync(path, constants.O_RDWR) };
}

/** This process's fds on `path` with their open flags (/proc/self/fdinfo). */
export function fdsOn(path: string): { fd: number; flags: number }[] {
  const out: { fd: number; flags: number }[] = [];
  for (const name of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`) !== path) continue;
      const flags = /flags:\s+([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${name}`, "utf8"))?.[1];
      out.push({ fd: Number(name), flags: Number.parseInt(flags ?? "0", 8) });
    } catch {} // the listing's own fd, gone by now
  }
  return out;
}
