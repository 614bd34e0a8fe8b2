// Request metadata: string keys with one or more values. On the wire each value is
// its own KeyValue, so a key with several values repeats.

import type { KeyValue } from "./gen/ttrpc/request.ts";

/** Metadata as a handler sees it: every key maps to all its values, in wire order. */
export type Metadata = Record<string, string[]>;
/** Metadata as a caller gives it: a single value or several. */
export type MetadataInit = Record<string, string | readonly string[]>;

/** Keys are lower-cased, as the Go library does, so both sides agree on lookups. */
export function toWire(md: MetadataInit | undefined): KeyValue[] {
  if (md === undefined) return [];
  const out: KeyValue[] = [];
  for (const [k, v] of Object.entries(md)) {
    const key = k.toLowerCase();
    if (typeof v === "string") out.push({ key, value: v });
    else for (const value of v) out.push({ key, value });
  }
  return out;
}

export function fromWire(kvs: readonly KeyValue[]): Metadata {
  const md: Metadata = Object.create(null);
  for (const { key, value } of kvs) {
    const values = md[key];
    if (values === undefined) md[key] = [value];
    else values.push(value);
  }
  return md;
}
