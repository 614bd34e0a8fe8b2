// The OCI runtime's console socket: for a process with `terminal: true`, runc (and crun) make
// the pty inside the container and send its master to the unix socket named by
// --console-socket, as one message whose ancillary data carries the fd (SCM_RIGHTS) and whose
// bytes are the master's name. The master is then ours: we copy it to containerd's fifos and
// set its window size.
//
// The socket lives in its own private directory under the temporary directory (a short path:
// sun_path holds 107 bytes, and state directories named after 76-character ids would not fit).
// Everything here is non-blocking: the runtime has sent the master before its create or exec
// returns, so the first try nearly always finds it; a slower runtime is polled for.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AF_UNIX,
  accept4,
  bindUnix,
  close,
  EAGAIN,
  EINTR,
  listen,
  MSG_CMSG_CLOEXEC,
  MSG_DONTWAIT,
  recvFd,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  socket,
  strerror,
} from "./libc.ts";

const POLL_MS = 5;

export class ConsoleSocket {
  private closed = false;

  private constructor(
    /** The path to give the runtime as --console-socket. */
    readonly path: string,
    private readonly dir: string,
    private readonly fd: number,
  ) {}

  static open(): ConsoleSocket {
    const dir = mkdtempSync(join(tmpdir(), "bunwasi-pty-"));
    const path = join(dir, "pty.sock");
    const [fd, e] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`console socket: socket(): ${strerror(e)}`);
    }
    const fail = (what: string, err: number): never => {
      close(fd);
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`console socket ${path}: ${what}: ${strerror(err)}`);
    };
    const [b, be] = bindUnix(fd, path);
    if (b < 0) return fail("bind", be);
    const [l, le] = listen(fd, 1);
    if (l < 0) return fail("listen", le);
    return new ConsoleSocket(path, dir, fd);
  }

  /**
   * The pty master the runtime sent (close-on-exec, ours to close), within `timeoutMs`. Throws
   * if none came: the runtime failed before it made the terminal, or sent something else.
   */
  async receiveMaster(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let conn = -1;
    try {
      for (;;) {
        if (this.closed) throw new Error("console socket closed");
        if (conn < 0) {
          const [c, e] = accept4(this.fd, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (c >= 0) conn = c;
          else if (e !== EAGAIN && e !== EINTR) throw new Error(`console socket: accept: ${strerror(e)}`);
        }
        if (conn >= 0) {
          const got = recvFd(conn, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
          if (got.fd >= 0) return got.fd;
          if (got.errno === 0) throw new Error("console socket: the runtime's message carried no terminal");
          if (got.errno !== EAGAIN && got.errno !== EINTR) throw new Error(`console socket: recvmsg: ${strerror(got.errno)}`);
        }
        if (Date.now() > deadline) throw new Error(`console socket: no terminal from the runtime within ${timeoutMs} ms`);
        await Bun.sleep(POLL_MS);
      }
    } finally {
      if (conn >= 0) close(conn);
    }
  }

  /** Closes the socket and removes its directory; the master, once received, is not touched. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
