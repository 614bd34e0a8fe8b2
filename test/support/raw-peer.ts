// A bare socket that speaks frames by hand, for sending what a well-behaved client never would.
import type { Socket } from "bun";
import { encodeFrame, type Frame, FrameReader } from "../../src/ttrpc/frame.ts";
import { Request, Response } from "../../src/ttrpc/gen/ttrpc/request.ts";

export interface Answer {
  streamId: number;
  type: number;
  flags: number;
  code: number | null;
  message: string;
  payload: Uint8Array;
}

export class RawPeer {
  readonly answers: Answer[] = [];
  closed = false;
  private socket!: Socket<undefined>;
  private wake: (() => void) | null = null;

  static async connect(path: string): Promise<RawPeer> {
    const peer = new RawPeer();
    const reader = new FrameReader({ frame: (f) => peer.onFrame(f), oversize: () => {} });
    peer.socket = await Bun.connect({
      unix: path,
      socket: {
        data: (_s, chunk) => reader.push(chunk),
        drain: () => peer.drain(),
        close: () => {
          peer.closed = true;
          peer.wake?.();
        },
        error: () => {
          peer.closed = true;
          peer.wake?.();
        },
      },
    });
    return peer;
  }

  private unsent: Uint8Array[] = [];

  /** Bytes written by us that the kernel has not taken yet (the server is not reading). */
  get pending(): number {
    return this.unsent.reduce((n, b) => n + b.length, 0);
  }

  /** Writes everything, however slowly the server reads. */
  send(bytes: Uint8Array): void {
    if (this.unsent.length > 0) {
      this.unsent.push(bytes);
      return;
    }
    const n = this.socket.write(bytes);
    if (n >= 0 && n < bytes.length) this.unsent.push(bytes.subarray(n));
  }

  private drain(): void {
    while (this.unsent.length > 0) {
      const next = this.unsent[0]!;
      const n = this.socket.write(next);
      if (n < 0) return;
      if (n < next.length) {
        this.unsent[0] = next.subarray(n);
        return;
      }
      this.unsent.shift();
    }
  }

  request(streamId: number, req: Partial<Request>, flags = 0): void {
    this.send(encodeFrame(streamId, 1, flags, Request.encode(Request.fromPartial(req)).finish()));
  }

  /** Waits until an answer for `streamId` arrives (or the connection closes). */
  async answer(streamId: number, timeoutMs = 30_000): Promise<Answer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const a = this.answers.find((x) => x.streamId === streamId);
      if (a) return a;
      if (this.closed) throw new Error(`connection closed before an answer on stream ${streamId}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no answer on stream ${streamId} within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, left);
      });
    }
  }

  close(): void {
    this.socket.terminate();
  }

  private onFrame(f: Frame): void {
    let code: number | null = null;
    let message = "";
    let payload = f.payload;
    if (f.type === 2) {
      const r = Response.decode(f.payload);
      code = r.status?.code ?? 0;
      message = r.status?.message ?? "";
      payload = r.payload;
    }
    this.answers.push({ streamId: f.streamId, type: f.type, flags: f.flags, code, message, payload: payload.slice() });
    this.wake?.();
  }
}
