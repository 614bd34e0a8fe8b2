// A terminal process's stdio: the runtime hands us the pty master (./console.ts: through runc's
// console socket, or directly from the shared-mode daemon) and we copy between it and
// containerd's fifos, as containerd's own shims do; the pty's line discipline stands between,
// so output arrives with \r\n and ^C is a signal. Only stdout is used (a terminal has one
// output stream). Every fd is non-blocking and every copy runs on the event loop: a terminal
// nobody reads must not stall other containers' calls.
//
// Stdin: we hold a writer of containerd's stdin fifo ourselves, so the copy does not see EOF
// while no client is attached (before ctr opens it, between attaches). CloseIO closes that
// writer: once the client's writer is gone too the copy sees EOF, and the terminal is hung
// up, as runc-v2 does (the session is over: the process gets SIGHUP, its output ends).

import { constants, openSync, writeSync } from "node:fs";
import { close as closeFd, setNonBlocking, setWindowSize, strerror } from "../linux/libc.ts";
import { closeAll, openLogFile, type StdioPaths, withReader } from "./stdio.ts";

const RETRY_MS = 2;

export class Terminal {
  /** Resolves once the process side of the pty is closed and all its output is delivered. */
  readonly drained: Promise<void>;
  private stdinWriter: number | null = null;
  private stdinReader: number | null = null;
  private stdout: number | null = null;
  private readers: { cancel(): Promise<void> }[] = [];
  private closed = false;

  private constructor(
    private readonly master: number,
    private onHangup: (() => void) | undefined,
  ) {
    this.drained = Promise.resolve();
  }

  /**
   * Takes ownership of `master` and starts copying; on failure `master` is closed. `onHangup`
   * (a runtime in this process, src/task/console.ts): called as the master closes, once it
   * copies, where no kernel signals the process of the hangup.
   */
  static async attach(master: number, paths: StdioPaths, onHangup?: () => void): Promise<Terminal> {
    const t = new Terminal(master, undefined);
    try {
      const [r, e] = setNonBlocking(master);
      if (r < 0) throw new Error(`terminal: O_NONBLOCK: ${strerror(e)}`);
      if (paths.stdout) t.stdout = await openOutput(paths.stdout);
      if (paths.stdin) {
        const path = localPath(paths.stdin);
        t.stdinReader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
        // With our reader open, a non-blocking open for writing cannot fail for want of one.
        t.stdinWriter = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
      }
    } catch (e) {
      await t.close();
      throw e;
    }
    t.onHangup = onHangup;
    (t as { drained: Promise<void> }).drained = t.copyOut();
    if (t.stdinReader !== null) void t.copyIn(t.stdinReader);
    return t;
  }

  /** ResizePty: the window size the process sees (and SIGWINCH to its foreground group). */
  resize(width: number, height: number): void {
    if (this.closed) return;
    const [r, e] = setWindowSize(this.master, height, width);
    if (r < 0) throw new Error(`resize terminal: ${strerror(e)}`);
  }

  /** CloseIO: stops holding stdin open; EOF reaches the copy once the client's writer closes. */
  async closeStdin(): Promise<void> {
    const w = this.stdinWriter;
    this.stdinWriter = null;
    if (w !== null) closeAll([w]);
  }

  /** Stops every copy and closes every fd (the master too). Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // The readers go first: Bun must not poll an fd number we have closed (and may be reused).
    await Promise.allSettled(this.readers.splice(0).map((r) => r.cancel()));
    // Before the master goes: the process then meets the hangup as the signal, not as the EOF
    // on its terminal that the close gives it.
    this.onHangup?.();
    closeFd(this.master);
    closeAll([this.stdinWriter, this.stdinReader, this.stdout].filter((fd) => fd !== null));
    this.stdinWriter = this.stdinReader = this.stdout = null;
  }

  /** master → stdout until the pty's last slave fd closes (read fails with EIO). */
  private async copyOut(): Promise<void> {
    const reader = Bun.file(this.master).stream().getReader();
    this.readers.push(reader);
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this.closed) break;
        if (this.stdout !== null) await writeAll(this.stdout, value, () => this.closed);
      }
    } catch {
      // EIO: the process side is gone, which is how a pty says end of output.
    }
    // containerd waits for EOF on its stdout fifo: our writer must go now, not at Delete.
    const out = this.stdout;
    this.stdout = null;
    if (out !== null) closeAll([out]);
  }

  /** stdin fifo → master until EOF (no writer left, after CloseIO): then the terminal hangs up. */
  private async copyIn(fd: number): Promise<void> {
    const reader = Bun.file(fd).stream().getReader();
    this.readers.push(reader);
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (this.closed) return;
        if (done) break;
        await writeAll(this.master, value, () => this.closed);
      }
    } catch {
      return; // the pty went away (the process exited) or we closed: no input left to deliver
    }
    await this.close();
  }
}

/** Writes all of `buf` to a non-blocking fd, waiting out EAGAIN; stops when `stop()` says so. */
async function writeAll(fd: number, buf: Uint8Array, stop: () => boolean): Promise<void> {
  let off = 0;
  while (off < buf.byteLength && !stop()) {
    try {
      off += writeSync(fd, buf, off, buf.byteLength - off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
      await Bun.sleep(RETRY_MS);
    }
  }
}

async function openOutput(path: string): Promise<number> {
  if (path.startsWith("binary://")) throw new Error(`stdio ${path}: binary:// log URIs are not supported with a terminal`);
  if (path.startsWith("file://")) return openLogFile(new URL(path).pathname);
  // Read-write, as for other containers (src/task/stdio.ts): the fifo always has a reader;
  // opened once the client's reader is there, so nothing we copy is lost before it.
  return withReader(path, () => openSync(path, constants.O_RDWR | constants.O_NONBLOCK));
}

function localPath(path: string): string {
  return path.startsWith("file://") ? new URL(path).pathname : path;
}
