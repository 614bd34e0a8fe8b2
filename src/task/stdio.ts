// The container's stdio: containerd hands us fifo paths (or file:// URIs) and we open
// them here and pass the fds to the OCI runtime, so the container's process writes
// straight into containerd's fifos and no byte passes through the shim. Opened with
// synchronous calls that never wait: every fifo open is non-blocking or read-write (which
// Linux never blocks), and the wait for a client's reader sleeps on the event loop
// (withReader). Synchronous: (docs/ARCHITECTURE.md, "Bun's thread pool").

import { closeSync, constants, openSync } from "node:fs";
import { setBlocking } from "../linux/libc.ts";
import { type BinaryLogger, startBinaryLogger } from "./binary-log.ts";

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
}

/** Whose output a binary:// URI logs: the container's (an exec's output has no logging program). */
export interface LogOwner {
  id: string;
  namespace: string;
}

export class Stdio {
  private constructor(
    readonly fds: [number, number, number],
    /** The binary:// logging program, if stdout named one: the caller stops it at delete. */
    readonly logger: BinaryLogger | null = null,
  ) {}

  static async open(paths: StdioPaths, owner?: LogOwner): Promise<Stdio> {
    const opened: number[] = [];
    try {
      opened.push(openIn(paths.stdin));
      // containerd gives stdout and stderr the same binary:// URI: one program takes both.
      if (paths.stdout.startsWith("binary://")) {
        if (!owner) throw new Error(`stdio ${paths.stdout}: binary:// log URIs are for a container's output, not an exec's`);
        const logger = await startBinaryLogger(paths.stdout, owner.id, owner.namespace);
        opened.push(logger.stdout, logger.stderr);
        return new Stdio(opened as [number, number, number], logger);
      }
      opened.push(await openOut(paths.stdout));
      opened.push(await openOut(paths.stderr));
      return new Stdio(opened as [number, number, number]);
    } catch (e) {
      closeAll(opened);
      throw e;
    }
  }

  /** The runtime's child holds its own copies once it is running; ours can go. */
  async close(): Promise<void> {
    closeAll(this.fds);
  }
}

/** Closes each fd; closing our copy of an fd cannot fail in a way anyone could act on. */
export function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {}
  }
}

function openIn(path: string): number {
  if (!path) return openSync("/dev/null", "r");
  // Non-blocking so the open never waits for a writer, then blocking again so the
  // container's reads wait for input instead of failing with EAGAIN.
  return blocking(openSync(localPath(path), constants.O_RDONLY | constants.O_NONBLOCK));
}

async function openOut(path: string): Promise<number> {
  if (!path) return openSync("/dev/null", "w");
  if (path.startsWith("binary://"))
    throw new Error(`stdio ${path}: binary:// for stderr alone is not supported: give stdout the same URI, as containerd does`);
  if (path.startsWith("file://")) return openLogFile(new URL(path).pathname);
  // Read-write: the fifo then always has a reader, so a container never dies of SIGPIPE
  // when containerd (restarting) or a detached ctr stops reading; its writes wait
  // instead, as under containerd's own shims. The open never blocks either.
  // But first the client's reader must be there (see withReader).
  return withReader(path, () => openSync(path, constants.O_RDWR));
}

/**
 * A file:// log file, appended to. Non-blocking so that a fifo given as a "file" fails
 * (ENXIO without a reader) instead of stalling the event loop; blocking again afterwards,
 * so the container's writes are ordinary ones.
 */
export function openLogFile(path: string): number {
  return blocking(openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK, 0o644));
}

/** How long a Create waits for the client to open its end of an output fifo. */
export const READER_WAIT_MS = 10_000;

/**
 * Opens `path` with `openRdwr` once a reader other than us has the fifo open. Bytes in a
 * fifo live only while someone holds it open: a process that writes and exits before the
 * client's reader arrives (ctr opens its end on another goroutine, which a loaded node can
 * run late; a shared-mode run is over within milliseconds) leaves them in a pipe that dies
 * with our last fd, and the client then reads nothing. containerd's runc shim waits for
 * the reader with a blocking write-only open; we probe with a non-blocking one (ENXIO
 * while no reader), which holds no thread, and sleep on the event loop between probes.
 * The probe stays open until the read-write fd is: a reader that saw its only writer
 * close would take that as the end of the output. Past READER_WAIT_MS (a client that
 * never reads) the fifo is opened as before. `openRdwr` must not block (read-write opens
 * of a fifo never do).
 */
export async function withReader(path: string, openRdwr: () => number, waitMs = READER_WAIT_MS): Promise<number> {
  const deadline = performance.now() + waitMs;
  let probe: number | undefined;
  for (let delay = 1; probe === undefined; delay = Math.min(delay * 2, 50)) {
    try {
      probe = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENXIO" || performance.now() >= deadline) break;
      await Bun.sleep(delay);
    }
  }
  try {
    return openRdwr();
  } finally {
    if (probe !== undefined) closeAll([probe]);
  }
}

function blocking(fd: number): number {
  const [r, err] = setBlocking(fd);
  if (r < 0) {
    closeAll([fd]);
    throw new Error(`fcntl(O_NONBLOCK off): errno ${err}`);
  }
  return fd;
}

function localPath(path: string): string {
  return path.startsWith("file://") ? new URL(path).pathname : path;
}
