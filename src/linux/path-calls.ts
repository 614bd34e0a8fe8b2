// What a path names, for a run thread's file guard (src/engines/wasmtime/file-guard.ts): raw
// openat, openat2, statx, readlinkat and close. A binding of its own, beside ./libc.ts (the
// shim's one libc binding), because every run thread evaluates what it loads, and in shared
// mode each idle container is such a thread: this file is loaded on a run's first open, and
// binds two symbols (syscall, errno) then. Linux on x86_64 and aarch64.

import { dlopen, FFIType, type Pointer, ptr, read } from "bun:ffi";

const CALLS: Record<string, { openat: number; openat2: number; statx: number; readlinkat: number; close: number }> = {
  x64: { openat: 257, openat2: 437, statx: 332, readlinkat: 267, close: 3 },
  arm64: { openat: 56, openat2: 437, statx: 291, readlinkat: 78, close: 57 },
};

export const AT_FDCWD = -100;
export const O_PATH = 0o10000000;
export const O_CLOEXEC = 0o2000000;
export const O_NOFOLLOW = process.arch === "arm64" ? 0o100000 : 0o400000;
export const O_DIRECTORY = process.arch === "arm64" ? 0o40000 : 0o200000;
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_BENEATH = 0x08;
export const ENOENT = 2;
export const ENOTDIR = 20;
export const ENOSYS = 38;

let bound: { syscall: (...a: number[]) => number | bigint; errno: () => Pointer | null } | undefined;

function call(name: keyof (typeof CALLS)["x64"], a = 0, b = 0, c = 0, d = 0, e = 0): [number, number] {
  const nrs = CALLS[process.arch];
  if (!nrs || process.platform !== "linux")
    throw new Error(`bunwasi runs on Linux x86_64 and aarch64 only (this is ${process.platform}/${process.arch})`);
  if (!bound) {
    const { i64, ptr: P } = FFIType;
    const s = dlopen("libc.so.6", {
      syscall: { args: [i64, i64, i64, i64, i64, i64], returns: i64 },
      __errno_location: { args: [], returns: P },
    }).symbols;
    bound = { syscall: s.syscall as (...a: number[]) => bigint, errno: s.__errno_location as () => Pointer | null };
  }
  const r = Number(bound.syscall(nrs[name], a, b, c, d, e));
  if (r >= 0) return [r, 0];
  const at = bound.errno();
  return [-1, at ? read.i32(at, 0) : 0];
}

/** openat(2) with no mode; [fd, 0] or [-1, errno]. `path` is NUL-terminated. */
export function openat(dirfd: number, path: Uint8Array, flags: number): [number, number] {
  return call("openat", dirfd, Number(ptr(path)), flags | O_CLOEXEC);
}

/** openat2(2) with no mode; [fd, 0] or [-1, errno] (ENOSYS before Linux 5.6). `path` is NUL-terminated. */
export function openat2(dirfd: number, path: Uint8Array, flags: number, resolve: number): [number, number] {
  // struct open_how { u64 flags; u64 mode; u64 resolve; }
  const how = new BigUint64Array([BigInt(flags | O_CLOEXEC), 0n, BigInt(resolve)]);
  return call("openat2", dirfd, Number(ptr(path)), Number(ptr(how)), 24);
}

const EMPTY = new Uint8Array(1);

/** The st_mode bits and the identity (device and inode) of an open fd: statx(2) with AT_EMPTY_PATH. */
export function statxFd(fd: number): { mode: number; id: string } | { errno: number } {
  const AT_EMPTY_PATH = 0x1000;
  const STATX_TYPE = 0x1;
  const STATX_INO = 0x100;
  const buf = new Uint8Array(256);
  const [r, e] = call("statx", fd, Number(ptr(EMPTY)), AT_EMPTY_PATH, STATX_TYPE | STATX_INO, Number(ptr(buf)));
  if (r < 0) return { errno: e };
  // struct statx: stx_mode u16 @28, stx_ino u64 @32, stx_dev_major u32 @136, stx_dev_minor u32 @140.
  const v = new DataView(buf.buffer);
  return { mode: v.getUint16(28, true), id: `${v.getUint32(136, true)}:${v.getUint32(140, true)}:${v.getBigUint64(32, true)}` };
}

/** What /proc says an fd is: the path it names now. */
export function fdLinkPath(fd: number): string | undefined {
  const name = new TextEncoder().encode(`/proc/self/fd/${fd}\0`);
  const buf = new Uint8Array(4096);
  const [n] = call("readlinkat", AT_FDCWD, Number(ptr(name)), Number(ptr(buf)), buf.length);
  return n < 0 ? undefined : new TextDecoder().decode(buf.subarray(0, n));
}

export function close(fd: number): void {
  call("close", fd);
}
