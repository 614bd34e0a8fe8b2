// A small ustar (POSIX.1-1988) tar writer and reader, written for image layers and OCI image
// layout archives. Names longer than ustar's name/prefix fields, and long symlink targets, get
// a PAX extended header ('x'), which GNU tar, containerd (Go archive/tar) and libarchive read.

export type TarEntry =
  | { type: "file"; path: string; data: Uint8Array; mode?: number; mtime?: number; uid?: number; gid?: number }
  | { type: "dir"; path: string; mode?: number; mtime?: number; uid?: number; gid?: number }
  | { type: "symlink"; path: string; target: string; mtime?: number; uid?: number; gid?: number }
  /** A device node ('3' character, '4' block), as `mknod` makes it: what tests of a runtime's view need. */
  | { type: "chardev" | "blockdev"; path: string; major: number; minor: number; mode?: number; mtime?: number; uid?: number; gid?: number }
  /** A named pipe ('6'), as `mkfifo` makes it. */
  | { type: "fifo"; path: string; mode?: number; mtime?: number; uid?: number; gid?: number };

/** An entry as read back; `mode` holds only the permission bits (0o7777). */
export type TarReadEntry =
  | { type: "file"; path: string; data: Uint8Array; mode: number; mtime: number; uid: number; gid: number }
  | { type: "dir"; path: string; mode: number; mtime: number; uid: number; gid: number }
  | { type: "symlink"; path: string; target: string; mode: number; mtime: number; uid: number; gid: number }
  | { type: "other"; typeflag: string; path: string; mode: number; mtime: number; uid: number; gid: number };

const BLOCK = 512;
const MAX_OCTAL_SIZE = 8 ** 11 - 1; // 11 octal digits in the size field
const enc = new TextEncoder();
const dec = new TextDecoder();

const TYPEFLAG = { file: "0", dir: "5", symlink: "2", chardev: "3", blockdev: "4", fifo: "6", pax: "x" } as const;

interface Header {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
  devmajor?: number;
  devminor?: number;
}

function putString(buf: Uint8Array, off: number, len: number, s: string | Uint8Array): void {
  const bytes = typeof s === "string" ? enc.encode(s) : s;
  if (bytes.length > len) throw new Error(`tar: field too long (${bytes.length} > ${len})`);
  buf.set(bytes, off);
}

/** Octal, zero padded to len-1 digits, NUL terminated (what GNU tar writes). */
function putOctal(buf: Uint8Array, off: number, len: number, n: number): void {
  if (!Number.isInteger(n) || n < 0) throw new Error(`tar: bad numeric field ${n}`);
  const s = n.toString(8);
  if (s.length > len - 1) throw new Error(`tar: number ${n} does not fit in ${len} bytes`);
  putString(buf, off, len, `${s.padStart(len - 1, "0")}\0`);
}

/** Split a path into ustar prefix (≤155 bytes) and name (≤100 bytes), or null if impossible. */
function splitUstarName(path: string): { prefix: string; name: string } | null {
  const bytes = enc.encode(path).length;
  if (bytes <= 100) return { prefix: "", name: path };
  if (bytes > 256) return null;
  // The split has to be at a '/', the prefix holds everything before it.
  for (let i = path.length - 1; i > 0; i--) {
    if (path[i] !== "/") continue;
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (enc.encode(prefix).length <= 155 && enc.encode(name).length <= 100 && name.length > 0) {
      return { prefix, name };
    }
  }
  return null;
}

function encodeHeader(h: Header, prefix: string): Uint8Array {
  const b = new Uint8Array(BLOCK);
  putString(b, 0, 100, h.name);
  putOctal(b, 100, 8, h.mode & 0o7777);
  putOctal(b, 108, 8, h.uid);
  putOctal(b, 116, 8, h.gid);
  putOctal(b, 124, 12, h.size);
  putOctal(b, 136, 12, Math.floor(h.mtime));
  b.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  putString(b, 156, 1, h.typeflag);
  putString(b, 157, 100, h.linkname);
  putString(b, 257, 6, "ustar\0");
  putString(b, 263, 2, "00");
  const owner = h.uid === 0 ? "root" : "";
  const group = h.gid === 0 ? "root" : "";
  putString(b, 265, 32, owner);
  putString(b, 297, 32, group);
  putOctal(b, 329, 8, h.devmajor ?? 0);
  putOctal(b, 337, 8, h.devminor ?? 0);
  putString(b, 345, 155, prefix);
  let sum = 0;
  for (const x of b) sum += x;
  putString(b, 148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
  return b;
}

/** One PAX record: "<len> <key>=<value>\n", where len counts the whole record. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = enc.encode(body).length;
  let len = bodyLen + 1;
  while (len !== bodyLen + String(len).length) len = bodyLen + String(len).length;
  return `${len}${body}`;
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

function normalizeEntryPath(path: string, isDir: boolean): string {
  let p = path.replace(/^\/+/, "").replace(/\/+/g, "/");
  if (p.startsWith("./")) p = p.slice(2);
  p = p.replace(/\/$/, "");
  if (p === "" || p === ".") throw new Error(`tar: empty entry path ${JSON.stringify(path)}`);
  if (p.split("/").includes("..")) throw new Error(`tar: entry path escapes the archive: ${path}`);
  return isDir ? `${p}/` : p;
}

/** The blocks for one entry (PAX header when needed, ustar header, data, padding). */
function encodeEntry(e: TarEntry): Uint8Array[] {
  const path = normalizeEntryPath(e.path, e.type === "dir");
  const data = e.type === "file" ? e.data : new Uint8Array(0);
  if (data.length > MAX_OCTAL_SIZE) throw new Error(`tar: ${path} is too large for ustar`);
  const linkname = e.type === "symlink" ? e.target : "";
  const defaultMode = e.type === "dir" ? 0o755 : e.type === "symlink" ? 0o777 : 0o644;
  const mode = e.type === "symlink" ? 0o777 : (e.mode ?? defaultMode);
  const out: Uint8Array[] = [];

  const split = splitUstarName(path);
  const pax: string[] = [];
  if (!split) pax.push(paxRecord("path", path));
  if (enc.encode(linkname).length > 100) pax.push(paxRecord("linkpath", linkname));
  const base = { mode, uid: e.uid ?? 0, gid: e.gid ?? 0, mtime: e.mtime ?? 0 };
  if (pax.length > 0) {
    const body = enc.encode(pax.join(""));
    const paxName = `PaxHeaders/${path.replace(/\/$/, "").split("/").pop()}`.slice(0, 100);
    out.push(encodeHeader({ ...base, name: paxName, mode: 0o644, size: body.length, typeflag: TYPEFLAG.pax, linkname: "" }, ""));
    out.push(body, new Uint8Array(padding(body.length)));
  }
  // When PAX carries the real values, the ustar fields hold a truncated fallback.
  const name = split ? split.name : path.slice(-100).replace(/^\/+/, "");
  const prefix = split ? split.prefix : "";
  const link = enc.encode(linkname).length > 100 ? linkname.slice(0, 100) : linkname;
  const dev = e.type === "chardev" || e.type === "blockdev" ? { devmajor: e.major, devminor: e.minor } : {};
  out.push(encodeHeader({ ...base, name, size: data.length, typeflag: TYPEFLAG[e.type], linkname: link, ...dev }, prefix));
  if (data.length > 0) out.push(data, new Uint8Array(padding(data.length)));
  return out;
}

/** A complete tar archive: the entries in order, then two zero blocks. */
export function writeTar(entries: Iterable<TarEntry>): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) parts.push(...encodeEntry(e));
  parts.push(new Uint8Array(2 * BLOCK));
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function getString(b: Uint8Array, off: number, len: number): string {
  const field = b.subarray(off, off + len);
  const nul = field.indexOf(0);
  return dec.decode(nul === -1 ? field : field.subarray(0, nul));
}

function getOctal(b: Uint8Array, off: number, len: number): number {
  if ((b[off] ?? 0) & 0x80) {
    // GNU base-256: big-endian, the top bit of the first byte marks it.
    let n = (b[off] ?? 0) & 0x7f;
    for (let i = 1; i < len; i++) n = n * 256 + (b[off + i] ?? 0);
    return n;
  }
  const s = getString(b, off, len).trim();
  return s === "" ? 0 : Number.parseInt(s, 8);
}

function parsePax(body: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 0;
  while (off < body.length) {
    const space = body.indexOf(0x20, off);
    if (space === -1) break;
    const len = Number.parseInt(dec.decode(body.subarray(off, space)), 10);
    if (!Number.isFinite(len) || len <= 0) throw new Error("tar: bad PAX record");
    const rec = dec.decode(body.subarray(space + 1, off + len - 1));
    const eq = rec.indexOf("=");
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    off += len;
  }
  return out;
}

/** Read a tar archive (ustar, PAX 'x' and GNU 'L'/'K' long names). Stops at the end marker. */
export function readTar(archive: Uint8Array): TarReadEntry[] {
  const out: TarReadEntry[] = [];
  let off = 0;
  let pax: Record<string, string> = {};
  let longName: string | undefined;
  let longLink: string | undefined;
  while (off + BLOCK <= archive.length) {
    const h = archive.subarray(off, off + BLOCK);
    if (h.every((x) => x === 0)) break;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (h[i] ?? 0);
    const stored = getOctal(h, 148, 8);
    if (stored !== sum) throw new Error(`tar: bad header checksum at offset ${off}`);
    const typeflag = getString(h, 156, 1) || "0";
    const size = pax.size !== undefined ? Number(pax.size) : getOctal(h, 124, 12);
    const dataStart = off + BLOCK;
    const data = archive.subarray(dataStart, dataStart + size);
    off = dataStart + size + padding(size);
    if (typeflag === "x") {
      pax = { ...pax, ...parsePax(data) };
      continue;
    }
    if (typeflag === "g") continue;
    if (typeflag === "L" || typeflag === "K") {
      const s = getString(data, 0, data.length);
      if (typeflag === "L") longName = s;
      else longLink = s;
      continue;
    }
    const prefix = getString(h, 345, 155);
    const ustarName = prefix ? `${prefix}/${getString(h, 0, 100)}` : getString(h, 0, 100);
    const path = pax.path ?? longName ?? ustarName;
    const target = pax.linkpath ?? longLink ?? getString(h, 157, 100);
    const meta = {
      path,
      mode: getOctal(h, 100, 8) & 0o7777,
      uid: pax.uid !== undefined ? Number(pax.uid) : getOctal(h, 108, 8),
      gid: pax.gid !== undefined ? Number(pax.gid) : getOctal(h, 116, 8),
      mtime: pax.mtime !== undefined ? Number(pax.mtime) : getOctal(h, 136, 12),
    };
    if (typeflag === "0" || typeflag === "7") out.push({ type: "file", ...meta, data: data.slice() });
    else if (typeflag === "5") out.push({ type: "dir", ...meta });
    else if (typeflag === "2") out.push({ type: "symlink", ...meta, target });
    else out.push({ type: "other", typeflag, ...meta });
    pax = {};
    longName = undefined;
    longLink = undefined;
  }
  return out;
}
