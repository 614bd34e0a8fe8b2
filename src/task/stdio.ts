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
  return open(path, constants.O_RDWR);
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
