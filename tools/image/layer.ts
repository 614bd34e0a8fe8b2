// One image layer: a tar of the given files, symlinks and directories (parent directories are
// added as needed), optionally gzip-compressed. diff_id is the digest of the uncompressed tar,
// the blob digest is that of what is stored.

import { readFileSync, statSync } from "node:fs";
import { type Digest, sha256 } from "./digest.ts";
import { MediaType } from "./media-types.ts";
import { type TarEntry, writeTar } from "./tar.ts";

export type LayerItem =
  | { path: string; data: Uint8Array | string; mode?: number }
  /** A host file; its permission bits are kept unless mode is given. */
  | { path: string; source: string; mode?: number }
  | { path: string; symlink: string }
  | { path: string; dir: true; mode?: number }
  /** A device node: containerd makes it with mknod when it unpacks the layer (as root). */
  | { path: string; device: "char" | "block"; major: number; minor: number; mode?: number }
  /** A named pipe (containerd makes it with mkfifo). */
  | { path: string; fifo: true; mode?: number };

export interface LayerOptions {
  gzip?: boolean;
  /** mtime for every entry (seconds); default 0 so the same input gives the same digests. */
  mtime?: number;
}

export interface Layer {
  mediaType: string;
  /** The stored blob (gzip or plain tar). */
  blob: Uint8Array;
  digest: Digest;
  size: number;
  diffId: Digest;
  /** The uncompressed tar. */
  tar: Uint8Array;
}

function cleanPath(p: string): string {
  const parts = p.split("/").filter((x) => x !== "" && x !== ".");
  if (parts.includes("..")) throw new Error(`layer path may not contain '..': ${p}`);
  if (parts.length === 0) throw new Error(`layer path is empty: ${JSON.stringify(p)}`);
  return parts.join("/");
}

function toEntry(item: LayerItem, mtime: number): TarEntry {
  const path = cleanPath(item.path);
  if ("symlink" in item) return { type: "symlink", path, target: item.symlink, mtime };
  if ("dir" in item) return { type: "dir", path, mode: item.mode ?? 0o755, mtime };
  if ("fifo" in item) return { type: "fifo", path, mode: item.mode ?? 0o666, mtime };
  if ("device" in item)
    return {
      type: item.device === "char" ? "chardev" : "blockdev",
      path,
      major: item.major,
      minor: item.minor,
      mode: item.mode ?? 0o666,
      mtime,
    };
  if ("source" in item) {
    const st = statSync(item.source);
    if (!st.isFile()) throw new Error(`${item.source} is not a regular file`);
    return { type: "file", path, data: readFileSync(item.source), mode: item.mode ?? st.mode & 0o7777, mtime };
  }
  const data = typeof item.data === "string" ? new TextEncoder().encode(item.data) : item.data;
  return { type: "file", path, data, mode: item.mode ?? 0o644, mtime };
}

/** The tar entries, parents first, each path once (a later item replaces an earlier one). */
export function layerEntries(items: LayerItem[], mtime = 0): TarEntry[] {
  const byPath = new Map<string, TarEntry>();
  for (const item of items) {
    const e = toEntry(item, mtime);
    const parts = e.path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      const existing = byPath.get(parent);
      if (existing && existing.type !== "dir") throw new Error(`layer: ${parent} is not a directory`);
      if (!existing) byPath.set(parent, { type: "dir", path: parent, mode: 0o755, mtime });
    }
    byPath.set(e.path, e);
  }
  return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

export function buildLayer(items: LayerItem[], opts: LayerOptions = {}): Layer {
  const tar = writeTar(layerEntries(items, opts.mtime ?? 0));
  const gzip = opts.gzip ?? true;
  const blob = gzip ? Bun.gzipSync(tar as Uint8Array<ArrayBuffer>, { level: 9 }) : tar;
  return {
    mediaType: gzip ? MediaType.layerGzip : MediaType.layer,
    blob,
    digest: sha256(blob),
    size: blob.length,
    diffId: sha256(tar),
    tar,
  };
}
