// The frame reader against a byte stream cut anywhere: frames split across chunks,
// many frames in one chunk, and oversize frames skipped without losing the next one.
import { describe, expect, test } from "bun:test";
import { encodeFrame, type Frame, FrameReader, HEADER_LENGTH, MAX_PAYLOAD, writeHeader } from "../../../src/ttrpc/frame.ts";

function collect() {
  const frames: { streamId: number; type: number; flags: number; payload: number[] }[] = [];
  const oversize: { streamId: number; length: number }[] = [];
  const reader = new FrameReader({
    frame: (f: Frame) => frames.push({ streamId: f.streamId, type: f.type, flags: f.flags, payload: [...f.payload] }),
    oversize: (streamId, _type, length) => oversize.push({ streamId, length }),
  });
  return { reader, frames, oversize };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const frames = [
  encodeFrame(1, 1, 0, new Uint8Array([1, 2, 3])),
  encodeFrame(3, 3, 0x5, new Uint8Array()),
  encodeFrame(0xfffffffd, 2, 0, new Uint8Array(70_000).fill(7)),
  encodeFrame(5, 3, 0x1, new Uint8Array([9])),
];
const expected = [
  { streamId: 1, type: 1, flags: 0, payload: [1, 2, 3] },
  { streamId: 3, type: 3, flags: 5, payload: [] },
  { streamId: 0xfffffffd, type: 2, flags: 0, payload: new Array(70_000).fill(7) },
  { streamId: 5, type: 3, flags: 1, payload: [9] },
];

describe("FrameReader", () => {
  test("all frames coalesced in one chunk", () => {
    const c = collect();
    c.reader.push(concat(frames));
    expect(c.frames).toEqual(expected);
    expect(c.reader.buffered).toBe(0);
  });

  test("one byte at a time", () => {
    const c = collect();
    const all = concat(frames);
    for (let i = 0; i < all.length; i++) c.reader.push(all.subarray(i, i + 1));
    expect(c.frames).toEqual(expected);
  });

  test("cut at random places, many times over", () => {
    const all = concat(frames);
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 200; round++) {
      const c = collect();
      for (let at = 0; at < all.length; ) {
        const n = 1 + rand(round % 2 ? 40 : 20_000);
        c.reader.push(all.subarray(at, at + n));
        at += n;
      }
      expect(c.frames).toEqual(expected);
    }
  });

  test("an oversize frame is reported once and skipped, even when its header is split", () => {
    const big = new Uint8Array(HEADER_LENGTH + MAX_PAYLOAD + 1);
    writeHeader(big, 0, MAX_PAYLOAD + 1, 7, 1, 0);
    const stream = concat([big, frames[0]!]);
    const c = collect();
    c.reader.push(stream.subarray(0, 4)); // half a header
    for (let at = 4; at < stream.length; at += 65_536) c.reader.push(stream.subarray(at, at + 65_536));
    expect(c.oversize).toEqual([{ streamId: 7, length: MAX_PAYLOAD + 1 }]);
    expect(c.frames).toEqual([expected[0]!]);
    // Nothing of the skipped payload was kept.
    expect(c.reader.buffered).toBe(0);
  });

  test("a frame exactly at the limit is delivered", () => {
    const c = collect();
    c.reader.push(encodeFrame(9, 3, 0, new Uint8Array(MAX_PAYLOAD)));
    expect(c.oversize).toEqual([]);
    expect(c.frames.length).toBe(1);
    expect(c.frames[0]!.payload.length).toBe(MAX_PAYLOAD);
  });
});
