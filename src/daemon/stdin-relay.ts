// A wasm container's stdin in the daemon, relayed through a fifo of our own.
//
// Why not hand the module containerd's stdin directly: the engine opens stdio by path
// (/proc/self/fd/N), and opening a fifo read-only blocks until a writer exists; once ctr
// has written its input and closed, that open would wait for ever. And a module blocked in
// a read of stdin could not be interrupted by a kill. Here the daemon is the only writer of
// the module's fifo: the open completes as soon as we connect, EOF is when containerd's
// side ends, and a kill closes our end so the blocked read returns (EOF) and the module
// reaches the interrupt check at once.
//
// Everything is non-blocking on the daemon's event loop: containerd's side is polled (a
// few ms apart while data flows, backing off to 50 ms when idle), writes that would block
// are retried.

import { dlopen, FFIType } from "bun:ffi";
import { closeSync, constants, openSync, readSync, writeSync } from "node:fs";

let libc: { mkfifo: (path: Buffer, mode: number) => number } | undefined;

/** mkfifo(3): no Node or Bun API makes a fifo. */
export function mkfifo(path: string, mode = 0o600): void {
  libc ??= dlopen("libc.so.6", { mkfifo: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 } }).symbols as never;
  if (libc!.mkfifo(Buffer.from(`${path}\0`), mode) !== 0) throw new Error(`mkfifo ${path} failed`);
}

const IDLE_MAX_MS = 50;

export class StdinRelay {
  private writer = -1;
  private closed = false;
  private done: Promise<unknown> = Promise.resolve();
  /** Settles once the relay holds nothing of the fifo any more. */
  private released: Promise<void> = Promise.resolve();
  private readonly buf = Buffer.alloc(64 * 1024);

  /** `source`: our fd of containerd's stdin (non-blocking); `fifo`: the path the module opens. */
  constructor(
    private readonly source: number,
    readonly fifo: string,
  ) {}

  /**
   * Connects once the module's thread has opened the fifo (until then opening the write end
   * fails with ENXIO), then copies until containerd's side ends or close() is called.
   * `done` resolves when the run is over: a module that never opens stdin ends the wait.
   */
  async run(done: Promise<unknown>): Promise<void> {
    this.done = done;
    let over = false;
    void done.finally(() => (over = true));
    while (!this.closed && !over) {
      try {
        this.writer = openSync(this.fifo, constants.O_WRONLY | constants.O_NONBLOCK);
        break;
      } catch {
        await Bun.sleep(1);
      }
    }
    let idle = 1;
    while (!this.closed && !over) {
      let n: number;
      try {
        n = readSync(this.source, this.buf, 0, this.buf.length, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") break;
        await Bun.sleep(idle);
        idle = Math.min(idle * 2, IDLE_MAX_MS);
        continue;
      }
      if (n === 0) break; // containerd's side closed: the module sees EOF
      idle = 1;
      if (!(await this.writeAll(this.buf.subarray(0, n)))) break;
    }
    this.close();
    await this.released;
  }

  private async writeAll(data: Uint8Array): Promise<boolean> {
    let off = 0;
    while (off < data.length) {
      if (this.closed) return false;
      try {
        off += writeSync(this.writer, data, off);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") return false; // EPIPE: the module closed stdin
        await Bun.sleep(5);
      }
    }
    return true;
  }

  /** Ends the module's stdin (EOF); idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.writer < 0) {
      // Never connected: the module's thread may be about to open the fifo, and an open
      // with no writer would block it for ever. A read-write end (an open that never
      // blocks) lets that open through; it goes when the run is over.
      let rw = -1;
      try {
        rw = openSync(this.fifo, constants.O_RDWR | constants.O_NONBLOCK);
      } catch {
        return;
      }
      this.released = this.done.finally(() => closeQuietly(rw)).then(() => {});
      return;
    }
    closeQuietly(this.writer);
    this.writer = -1;
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}
