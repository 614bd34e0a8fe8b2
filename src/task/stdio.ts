// The container's stdio: containerd hands us fifo paths (or file:// URIs) and we open
// them here and pass the fds to the OCI runtime, so the container's process writes
// straight into containerd's fifos and no byte passes through the shim. Opened with
// asynchronous file I/O: an open on a slow filesystem must not stall other pods' calls.

import { constants } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { setBlocking } from "../linux/libc.ts";

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
}

export class Stdio {
  private constructor(private readonly handles: [FileHandle, FileHandle, FileHandle]) {}

  get fds(): [number, number, number] {
    return [this.handles[0].fd, this.handles[1].fd, this.handles[2].fd];
  }

  static async open(paths: StdioPaths): Promise<Stdio> {
    const opened: FileHandle[] = [];
    try {
      opened.push(await openIn(paths.stdin));
      opened.push(await openOut(paths.stdout));
      opened.push(await openOut(paths.stderr));
      return new Stdio(opened as [FileHandle, FileHandle, FileHandle]);
    } catch (e) {
      await Promise.allSettled(opened.map((h) => h.close()));
      throw e;
    }
  }

  /** The runtime's child holds its own copies once it is running; ours can go. */
  async close(): Promise<void> {
    // Closing our copy of an fd cannot fail in a way anyone could act on.
    await Promise.allSettled(this.handles.map((h) => h.close()));
  }
}

async function openIn(path: string): Promise<FileHandle> {
  if (!path) return open("/dev/null", "r");
  // Non-blocking so the open never waits for a writer, then blocking again so the
  // container's reads wait for input instead of failing with EAGAIN.
  return blocking(await open(localPath(path), constants.O_RDONLY | constants.O_NONBLOCK));
}

async function openOut(path: string): Promise<FileHandle> {
  if (!path) return open("/dev/null", "w");
  if (path.startsWith("binary://")) throw new Error(`stdio ${path}: binary:// log URIs are not supported yet`);
  if (path.startsWith("file://")) return open(new URL(path).pathname, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o644);
  // Read-write: the fifo then always has a reader, so a container never dies of SIGPIPE
  // when containerd (restarting) or a detached ctr stops reading; its writes wait
  // instead, as under containerd's own shims. The open never blocks either.
  // But first the client's reader must be there (see withReader).
  return withReader(path, () => open(path, constants.O_RDWR));
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
 * while no reader), which holds no thread. The probe stays open until the read-write fd
 * is: a reader that saw its only writer close would take that as the end of the output.
 * Past READER_WAIT_MS (a client that never reads) the fifo is opened as before.
 */
export async function withReader(path: string, openRdwr: () => Promise<FileHandle>, waitMs = READER_WAIT_MS): Promise<FileHandle> {
  const deadline = performance.now() + waitMs;
  let probe: FileHandle | undefined;
  for (let delay = 1; !probe; delay = Math.min(delay * 2, 50)) {
    try {
      probe = await open(path, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENXIO" || performance.now() >= deadline) break;
      await Bun.sleep(delay);
    }
  }
  try {
    return await openRdwr();
  } finally {
    await probe?.close();
  }
}

async function blocking(h: FileHandle): Promise<FileHandle> {
  const [r, err] = setBlocking(h.fd);
  if (r < 0) {
    await h.close();
    throw new Error(`fcntl(O_NONBLOCK off): errno ${err}`);
  }
  return h;
}

function localPath(path: string): string {
  return path.startsWith("file://") ? new URL(path).pathname : path;
}
