// A wasm container's stdin in the daemon, relayed through a fifo of our own.
//
// Why not hand the module containerd's stdin directly: the engine opens stdio by path
// (/proc/self/fd/N), and opening a fifo read-only blocks until a writer exists; once ctr
// has written its input and closed, that open would wait for ever. And a module blocked in
// a read of stdin could not be interrupted by a kill. Here the daemon is the only writer of
// the module's fifo: EOF is when containerd's side ends, and a kill closes our ends so the
// blocked read returns (EOF) and the module reaches the interrupt check at once.
//
// containerd's side is read as a stream (Bun waits on the fd in its event loop: no polling
// while stdin is attached and idle). Its pending read holds a 256 KiB buffer of Bun's and a
// dup of the fd until the reader goes, but only the pages a read filled are resident: none
// while no input has come (200 idle containers cost the daemon the same with stdin attached as
// without, bench/shared/stdin-idle.ts), at most a pipe's capacity (64 KiB) once input passed.
// The module's fifo is written through a FileSink of Bun's own write end,
// which waits for room when the module reads slower than containerd writes: Bun opens the
// fifo O_WRONLY|O_NONBLOCK and waits in its event loop for room, so a module that stops
// reading never blocks the daemon's thread (test/unit/daemon/stdin-relay.test.ts checks the
// flags and that nothing is lost). Bun never closes
// the fd we pass it; it owns and closes its writer's. Nothing is written before the module
// holds its end of the fifo (a fifo drops what is in it when the last end closes, and a
// module opening it with no writer left would wait for ever): the relay first waits for that
// open, which the engine makes as it builds the run's WASI context. It is the one timed wait
// left, tried every millisecond and bounded by the run's start-up (a blocking open on Bun's
// thread pool would do it without a timer, but holds a pool thread per starting container).

import { closeSync, constants, openSync } from "node:fs";
import { rm } from "node:fs/promises";
import type { FileSink } from "bun";
import { mkfifo, strerror } from "../linux/libc.ts";

/**
 * The most written to the module's fifo before its reader is told: a pipe's smallest capacity
 * (one page: the kernel gives a new pipe no more once the user's pipe pages pass
 * /proc/sys/fs/pipe-user-pages-soft, as a node with thousands of containers does).
 */
const FIFO_PIECE = 4096;

/** Makes the module's stdin fifo at `path` (replacing a stale one). */
export async function makeStdinFifo(path: string): Promise<void> {
  await rm(path, { force: true });
  const [r, e] = mkfifo(path);
  if (r < 0) throw new Error(`mkfifo ${path}: ${strerror(e)}`);
}

export class StdinRelay {
  private closed = false;
  private done: Promise<unknown> = Promise.resolve();
  private sink: FileSink | null = null;
  private reader: { cancel(): Promise<void> } | null = null;
  /** Settles once the relay holds nothing of the fifo any more. */
  private released: Promise<unknown> = Promise.resolve();
  /**
   * Told each time the fifo has news (written, closed; `ended`: no more input will come, once
   * what is in it is read): an engine reading it without blocking waits for that.
   */
  private readonly listeners: ((ended: boolean) => void)[] = [];

  /** `source`: our fd of containerd's stdin (non-blocking; the caller owns it); `fifo`: the path the module opens. */
  constructor(
    private readonly source: number,
    readonly fifo: string,
  ) {}

  /**
   * Copies containerd's stdin to the module's fifo until containerd's side ends, close() is
   * called, or `done` (the run is over) settles; resolves once the relay holds nothing.
   */
  async run(done: Promise<unknown>): Promise<void> {
    this.done = done;
    let over = false;
    void done.finally(() => {
      over = true;
      this.close();
    });
    try {
      // Until the module's thread has opened the fifo, a non-blocking open for writing fails (ENXIO).
      let probe = -1;
      while (!this.closed && !over) {
        try {
          probe = openSync(this.fifo, constants.O_WRONLY | constants.O_NONBLOCK);
          break;
        } catch {
          await Bun.sleep(1);
        }
      }
      if (probe < 0) return;
      // Bun's own write end (the module's is there, so its open succeeds); the probe goes.
      try {
        this.sink = Bun.file(this.fifo).writer();
      } finally {
        closeSync(probe);
      }
      // The fifo has its writer: from now on a reader's EOF is the end of stdin.
      this.news();
      const sink = this.sink;
      const reader = Bun.file(this.source).stream().getReader();
      this.reader = reader;
      while (!this.closed) {
        const { done: eof, value } = await reader.read();
        if (eof || this.closed) break; // containerd's side closed: the module sees EOF
        // One fifo's worth at most between two news: a reader that waits for news once it found
        // the fifo empty (a run pool's) is told after each piece is in, and a piece always fits
        // an empty fifo. A larger write would wait for room that only such a reader can make,
        // which waits for news that only the end of that write sends.
        for (let at = 0; at < value.length && !this.closed; at += FIFO_PIECE) {
          sink.write(value.subarray(at, at + FIFO_PIECE));
          await sink.flush();
          this.news();
        }
      }
    } catch {
      // The module closed stdin (EPIPE) or the stream was cancelled: either way the relay is over.
    } finally {
      this.close();
      // Once this settles Bun has let go of containerd's fd: the caller may close it (a number
      // Bun still watched could be another file's by the time it looked again).
      await this.reader?.cancel().catch(() => {});
      await this.released;
      // Whatever was still Bun's is closed now.
      this.news();
    }
  }

  /** Calls `news` after each write to the fifo and once it is closed. */
  watch(news: (ended: boolean) => void): void {
    this.listeners.push(news);
  }

  private news(): void {
    for (const f of this.listeners) f(this.closed);
  }

  private readonly newsNow = () => this.news();

  /** Ends the module's stdin (EOF); idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    void this.reader?.cancel().catch(() => {});
    if (this.sink) {
      // The news once Bun has closed its end (end() may close it later): a reader's EOF then.
      try {
        const ended = this.sink.end();
        if (ended instanceof Promise) void ended.then(this.newsNow, this.newsNow);
        else this.news();
      } catch {
        this.news(); // already failed (EPIPE): nothing left to end
      }
      return;
    }
    // Never connected: the module's thread may be about to open the fifo, and an open with no
    // writer would block it for ever. A read-write end (an open that never blocks) lets that
    // open through; it goes when the run is over.
    let rw = -1;
    try {
      rw = openSync(this.fifo, constants.O_RDWR | constants.O_NONBLOCK);
    } catch {
      return; // no fifo (never made, or removed): nobody can be waiting on it
    }
    this.released = this.done
      .catch(() => {})
      .finally(() => {
        try {
          closeSync(rw);
        } catch {}
      });
  }
}
