// In-memory files for a helper command's input and output (runc, ldd): a command's pipes would
// start Bun's thread pool (docs/ARCHITECTURE.md, "Bun's thread pool"); a memfd passed by number starts nothing.

import { closeSync, fstatSync, readSync, writeSync } from "node:fs";
import { memfdCreate, strerror } from "./libc.ts";

/** A new memfd (close-on-exec), holding `data` if given; its offset stays at 0. */
export function memfd(name: string, data?: Uint8Array): number {
  const [fd, e] = memfdCreate(name);
  if (fd < 0) throw new Error(`memfd_create: ${strerror(e)}`);
  try {
    // At offset 0 (pwrite), leaving the file offset, which a child's copy shares, at the start.
    if (data) writeSync(fd, data, 0, data.length, 0);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  return fd;
}

/** The whole of a file read from its start, whatever its offset (a child's writes moved it). */
export function readAll(fd: number): string {
  const buf = Buffer.alloc(fstatSync(fd).size);
  let at = 0;
  while (at < buf.length) {
    const n = readSync(fd, buf, at, buf.length - at, at);
    if (n <= 0) break;
    at += n;
  }
  return buf.toString("utf8", 0, at);
}
