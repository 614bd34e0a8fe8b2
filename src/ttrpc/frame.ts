// ttrpc framing: a 10-byte header (u32be payload length, u32be stream id, u8 type,
// u8 flags) followed by the payload. This file knows bytes only, never protobuf.

export const HEADER_LENGTH = 10;
/** Largest payload either side accepts or sends (the Go library's limit). */
export const MAX_PAYLOAD = 4 << 20;

export enum FrameType {
  Request = 1,
  Response = 2,
  Data = 3,
}

export enum Flag {
  /** request, data: the sender will send nothing more on this stream. */
  RemoteClosed = 0x1,
  /** request: the sender will go on sending data frames (client streaming). */
  RemoteOpen = 0x2,
  /** data: the frame carries no message, only flags. */
  NoData = 0x4,
}

export interface Frame {
  streamId: number;
  type: number;
  flags: number;
  /** A view into the receive buffer, valid until the handler returns; copy to keep. */
  payload: Uint8Array;
}

/** Header and payload in one buffer, so a frame is always written in one piece. */
export function encodeFrame(streamId: number, type: number, flags: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_LENGTH + payload.length);
  writeHeader(out, 0, payload.length, streamId, type, flags);
  out.set(payload, HEADER_LENGTH);
  return out;
}

export function writeHeader(out: Uint8Array, at: number, length: number, streamId: number, type: number, flags: number): void {
  out[at] = length >>> 24;
  out[at + 1] = length >>> 16;
  out[at + 2] = length >>> 8;
  out[at + 3] = length;
  out[at + 4] = streamId >>> 24;
  out[at + 5] = streamId >>> 16;
  out[at + 6] = streamId >>> 8;
  out[at + 7] = streamId;
  out[at + 8] = type;
  out[at + 9] = flags;
}

function u32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

export interface FrameSink {
  frame(frame: Frame): void;
  /** A header announced more than MAX_PAYLOAD; its payload is being skipped. */
  oversize(streamId: number, type: number, length: number): void;
}

/**
 * Turns a byte stream cut anywhere into frames. Complete frames inside one chunk are
 * handed out as views without copying; a frame split across chunks is gathered into
 * one buffer of its final size (no quadratic re-concatenation). Oversized payloads
 * are skipped as they arrive, never buffered.
 */
export class FrameReader {
  private partial: Uint8Array | null = null; // a header, or a whole frame, being gathered
  private filled = 0;
  private skip = 0; // bytes of an oversized payload still to discard

  constructor(private readonly sink: FrameSink) {}

  push(buf: Uint8Array): void {
    let at = 0;
    const end = buf.length;
    while (at < end) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, end - at);
        this.skip -= n;
        at += n;
        continue;
      }
      if (this.partial !== null) {
        at = this.fill(buf, at);
        continue;
      }
      if (end - at < HEADER_LENGTH) {
        this.gather(new Uint8Array(HEADER_LENGTH), buf, at);
        return;
      }
      const length = u32(buf, at);
      if (length > MAX_PAYLOAD) {
        this.oversize(u32(buf, at + 4), buf[at + 8]!, length);
        at += HEADER_LENGTH;
        continue;
      }
      if (end - at - HEADER_LENGTH < length) {
        this.gather(new Uint8Array(HEADER_LENGTH + length), buf, at);
        return;
      }
      const start = at + HEADER_LENGTH;
      this.sink.frame({
        streamId: u32(buf, at + 4),
        type: buf[at + 8]!,
        flags: buf[at + 9]!,
        payload: buf.subarray(start, start + length),
      });
      at = start + length;
    }
  }

  /** Bytes held for an incomplete frame: never more than one maximum frame. */
  get buffered(): number {
    return this.partial?.length ?? 0;
  }

  private gather(into: Uint8Array, buf: Uint8Array, at: number): void {
    into.set(buf.subarray(at), 0);
    this.partial = into;
    this.filled = buf.length - at;
  }

  private fill(buf: Uint8Array, at: number): number {
    const partial = this.partial!;
    const n = Math.min(partial.length - this.filled, buf.length - at);
    partial.set(buf.subarray(at, at + n), this.filled);
    this.filled += n;
    at += n;
    if (this.filled < partial.length) return at;
    if (partial.length === HEADER_LENGTH) {
      const length = u32(partial, 0);
      if (length > MAX_PAYLOAD) {
        this.partial = null;
        this.oversize(u32(partial, 4), partial[8]!, length);
        return at;
      }
      if (length > 0) {
        const whole = new Uint8Array(HEADER_LENGTH + length);
        whole.set(partial, 0);
        this.partial = whole;
        return at;
      }
    }
    this.partial = null;
    this.sink.frame({ streamId: u32(partial, 4), type: partial[8]!, flags: partial[9]!, payload: partial.subarray(HEADER_LENGTH) });
    return at;
  }

  private oversize(streamId: number, type: number, length: number): void {
    this.skip = length;
    this.sink.oversize(streamId, type, length);
  }
}
