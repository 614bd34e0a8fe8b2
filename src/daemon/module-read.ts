// The daemon reads a module file off its main thread: the main thread serves every pod, and a
// module may be hundreds of MB. The file is opened as every reader opens it
// (src/engines/module-file.ts: inside its root, a regular file within the cap; the opens take
// microseconds), and its bytes are read on Bun's thread pool, bounded by the same cap.

import { closeSync, fstatSync, read } from "node:fs";
import { MODULE_MAX_BYTES, ModuleFileError, openModuleFile } from "../engines/module-file.ts";

function readAt(fd: number, buf: Uint8Array, off: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, off, buf.length - off, pos, (e, n) => (e ? reject(e) : resolve(n))));
}

/** The whole of an fd from openModuleFile, from its start, read asynchronously: at most `maxBytes`. */
export async function readModuleFile(fd: number, shown: string, maxBytes = MODULE_MAX_BYTES): Promise<Uint8Array> {
  const size = fstatSync(fd).size;
  if (size > maxBytes) throw new ModuleFileError(`${shown}: ${size} bytes, more than a module may have (${maxBytes})`);
  // One byte more than the size: a file still growing shows as longer than it said.
  const buf = new Uint8Array(size + 1);
  let n = 0;
  for (;;) {
    const got = await readAt(fd, buf, n, n);
    if (got === 0) break;
    n += got;
    if (n === buf.length) throw new ModuleFileError(`${shown}: grew while it was read (more than ${size} bytes)`);
  }
  return buf.subarray(0, n);
}

/** `path` inside `root`, read whole off the main thread (precompile's ModuleReader in the daemon). */
export async function readModule(root: string, path: string, shown: string): Promise<Uint8Array> {
  const { fd } = openModuleFile(root, path, shown);
  try {
    return await readModuleFile(fd, shown);
  } finally {
    closeSync(fd);
  }
}
