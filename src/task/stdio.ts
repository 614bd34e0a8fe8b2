// The container's stdio: containerd hands us fifo paths (or file:// URIs) and we open
// them here and pass the fds to the OCI runtime, so the container's process writes
// straight into containerd's fifos and no byte passes through the shim.

import { closeSync, constants, openSync } from "node:fs";
import { setBlocking } from "../linux/libc.ts";

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
}

export class Stdio {
  private constructor(readonly fds: [number, number, number]) {}

  static open(paths: StdioPaths): Stdio {
    const opened: number[] = [];
    try {
      opened.push(openIn(paths.stdin));
      opened.push(openOut(paths.stdout));
      opened.push(openOut(paths.stderr));
      return new Stdio(opened as [number, number, number]);
    } catch (e) {
      for (const fd of opened) closeSync(fd);
      throw e;
    }
  }

  /** The runtime's child holds its own copies once it is running; ours can go. */
  close(): void {
    for (const fd of this.fds) {
      try {
        closeSync(fd);
      } catch {}
    }
  }
}

function openIn(path: string): number {
  if (!path) return openSync("/dev/null", "r");
  // Non-blocking so the open never waits for a writer, then blocking again so the
  // container's reads wait for input instead of failing with EAGAIN.
  return blocking(openSync(localPath(path), constants.O_RDONLY | constants.O_NONBLOCK));
}

function openOut(path: string): number {
  if (!path) return openSync("/dev/null", "w");
  if (path.startsWith("binary://")) throw new Error(`stdio ${path}: binary:// log URIs are not supported yet`);
  if (path.startsWith("file://"))
    return openSync(new URL(path).pathname, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o644);
  // Read-write: the fifo then always has a reader, so a container never dies of SIGPIPE
  // when containerd (restarting) or a detached ctr stops reading; its writes wait
  // instead, as under containerd's own shims. The open never blocks either.
  return openSync(path, constants.O_RDWR);
}

function blocking(fd: number): number {
  const [r, err] = setBlocking(fd);
  if (r < 0) {
    closeSync(fd);
    throw new Error(`fcntl(O_NONBLOCK off): errno ${err}`);
  }
  return fd;
}

function localPath(path: string): string {
  return path.startsWith("file://") ? new URL(path).pathname : path;
}
