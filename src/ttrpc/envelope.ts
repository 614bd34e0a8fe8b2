// The Request and Response envelopes, encoded straight into a frame buffer.
// Decoding uses the generated messages; encoding a response is hand-written because it
// runs once per call on the server's hot path and is two fields long.

import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { oversize, type StatusDetail } from "./errors.ts";
import { type Frame, FrameType, HEADER_LENGTH, MAX_PAYLOAD, writeHeader } from "./frame.ts";
import { Status } from "./gen/google/rpc/status.ts";
import { type KeyValue, Request, Response } from "./gen/ttrpc/request.ts";

export type { KeyValue };
export { Request, Response };

export interface StatusInit {
  code: number;
  message: string;
  details?: StatusDetail[];
}

/**
 * A response frame. An OK status is left out (Go treats a missing status as OK), so a
 * successful answer is the header plus one bytes field. Throws RESOURCE_EXHAUSTED if it
 * would exceed the frame limit, before anything is written.
 */
export function responseFrame(streamId: number, status: StatusInit | null, payload: Uint8Array | null): Uint8Array {
  const statusBytes = status === null || status.code === 0 ? null : encodeStatus(status);
  const plen = payload?.length ?? 0;
  let size = 0;
  if (statusBytes !== null) size += 1 + varintSize(statusBytes.length) + statusBytes.length;
  if (plen > 0) size += 1 + varintSize(plen) + plen;
  if (size > MAX_PAYLOAD) throw oversize(size, MAX_PAYLOAD);
  const out = new Uint8Array(HEADER_LENGTH + size);
  writeHeader(out, 0, size, streamId, FrameType.Response, 0);
  let at = HEADER_LENGTH;
  if (statusBytes !== null) {
    out[at++] = 0x0a; // field 1, length-delimited
    at = writeVarint(out, at, statusBytes.length);
    out.set(statusBytes, at);
    at += statusBytes.length;
  }
  if (plen > 0) {
    out[at++] = 0x12; // field 2, length-delimited
    at = writeVarint(out, at, plen);
    out.set(payload!, at);
  }
  return out;
}

/** A data frame with a message, or with flags only when `payload` is null. */
export function dataFrame(streamId: number, flags: number, payload: Uint8Array | null): Uint8Array {
  const len = payload?.length ?? 0;
  if (len > MAX_PAYLOAD) throw oversize(len, MAX_PAYLOAD);
  const out = new Uint8Array(HEADER_LENGTH + len);
  writeHeader(out, 0, len, streamId, FrameType.Data, flags);
  if (payload !== null) out.set(payload, HEADER_LENGTH);
  return out;
}

export function requestFrame(streamId: number, flags: number, request: Request): Uint8Array {
  const body = Request.encode(request, new BinaryWriter()).finish();
  if (body.length > MAX_PAYLOAD) throw oversize(body.length, MAX_PAYLOAD);
  const out = new Uint8Array(HEADER_LENGTH + body.length);
  writeHeader(out, 0, body.length, streamId, FrameType.Request, flags);
  out.set(body, HEADER_LENGTH);
  return out;
}

export function decodeRequest(frame: Frame): Request {
  return Request.decode(frame.payload);
}

export function decodeResponse(frame: Frame): Response {
  return Response.decode(frame.payload);
}

function encodeStatus(status: StatusInit): Uint8Array {
  return Status.encode({
    code: status.code,
    message: status.message,
    details: (status.details ?? []).map((d) => ({ typeUrl: d.typeUrl, value: d.value })),
  }).finish();
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n >>>= 7;
    size++;
  }
  return size;
}

function writeVarint(out: Uint8Array, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[at++] = n;
  return at;
}
