// One side of a ttrpc connection over a Bun socket: frames in, frames out.
// Outgoing frames queued in the same tick are coalesced into one write. A peer that
// reads slowly fills the queue, which makes stream senders wait in `writable()`; on a
// server it also pauses reading, so a client that sends requests but never reads the
// answers cannot make us buffer without bound. A client never pauses its reading: if
// both ends did, two busy peers could each wait for the other forever.

import type { Socket } from "bun";
import { FrameReader, type FrameSink } from "./frame.ts";

/** Above this many queued outgoing bytes we stop reading and stream senders wait. */
const HIGH_WATER = 4 << 20;
/** Below this, reading resumes and waiting senders go on. */
const LOW_WATER = 1 << 20;

export class Wire {
  private socket: Socket<unknown> | null = null;
  private readonly reader: FrameReader;
  private queue: Uint8Array[] = [];
  private queued = 0;
  private flushScheduled = false;
  private blocked = false; // the kernel buffer is full: wait for drain
  private paused = false; // for outbound backlog
  private held = false; // at the receiver's request
  private readingStopped = false;
  private waiters: (() => void)[] = [];
  private closedFlag = false;
  private endAfterFlush = false;
  private readonly closeCallbacks: ((reason?: string) => void)[] = [];

  constructor(
    sink: FrameSink,
    private readonly pauseWhenBacklogged: boolean,
  ) {
    this.reader = new FrameReader(sink);
  }

  attach(socket: Socket<unknown>): void {
    this.socket = socket;
    if (this.queued > 0) this.scheduleFlush();
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Outgoing bytes not yet taken by the kernel. */
  get backlog(): number {
    return this.queued;
  }

  /** Bytes held for an incomplete incoming frame. */
  get incomingBuffered(): number {
    return this.reader.buffered;
  }

  onClose(cb: (reason?: string) => void): void {
    this.closeCallbacks.push(cb);
  }

  // --- socket events, called by the server's or client's socket handlers ---

  received(chunk: Uint8Array): void {
    if (!this.closedFlag) this.reader.push(chunk);
  }

  drained(): void {
    this.blocked = false;
    this.flush();
  }

  socketClosed(reason?: string): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.queue = [];
    this.queued = 0;
    this.release();
    for (const cb of this.closeCallbacks) cb(reason);
  }

  // --- sending ---

  send(frame: Uint8Array): boolean {
    if (this.closedFlag || this.endAfterFlush) return false;
    this.queue.push(frame);
    this.queued += frame.length;
    if (this.pauseWhenBacklogged && this.queued > HIGH_WATER && !this.paused) {
      this.paused = true;
      this.updateReading();
    }
    this.scheduleFlush();
    return true;
  }

  /** Resolves when the outgoing queue is short enough to add more (or the wire closed). */
  writable(): Promise<void> | undefined {
    if (this.queued <= HIGH_WATER || this.closedFlag) return undefined;
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Sends what is queued, then closes our side. */
  end(): void {
    if (this.closedFlag) return;
    this.endAfterFlush = true;
    if (this.queued === 0) this.socket?.end();
  }

  /** Closes at once, dropping whatever is queued. */
  terminate(): void {
    if (this.closedFlag) return;
    const socket = this.socket;
    this.socketClosed("terminated");
    socket?.terminate();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.blocked || this.socket === null) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const socket = this.socket;
    if (socket === null || this.blocked || this.closedFlag) return;
    while (this.queue.length > 0) {
      const chunk = this.queue.length === 1 ? this.queue[0]! : concatAll(this.queue, this.queued);
      const written = socket.write(chunk);
      if (written < 0) {
        this.socketClosed("write failed");
        return;
      }
      this.queued -= written;
      if (written < chunk.length) {
        this.queue = [chunk.subarray(written)];
        this.blocked = true;
        break;
      }
      this.queue = [];
    }
    if (this.queued <= LOW_WATER) this.release();
    if (this.queued === 0 && this.endAfterFlush) socket.end();
  }

  /**
   * Stops (or restarts) reading for the receiver's own reasons, e.g. too much inbound
   * data waiting for handlers; independent of the pause for outbound backlog.
   */
  holdReading(hold: boolean): void {
    this.held = hold;
    this.updateReading();
  }

  private updateReading(): void {
    const stop = this.paused || this.held;
    if (this.socket === null || this.closedFlag || stop === this.readingStopped) return;
    this.readingStopped = stop;
    if (stop) this.socket.pause();
    else this.socket.resume();
  }

  private release(): void {
    if (this.paused) {
      this.paused = false;
      this.updateReading();
    }
    const waiters = this.waiters;
    if (waiters.length === 0) return;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

function concatAll(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
