// The few libc calls Bun has no API for, through bun:ffi: the credentials of a unix
// socket's peer (getsockopt SO_PEERCRED) and binding a listening unix socket whose fd
// can be handed to another process. The package stands alone, so this is its own tiny
// binding, loaded on first use: importing the package never touches libc.
//
// Linux only, x86_64 and aarch64: SOL_SOCKET = 1 and SO_PEERCRED = 17 there (other
// architectures number them differently), and struct ucred is { pid, uid, gid } as three
// 32-bit ints. Anything else is refused with an error saying so.

import { dlopen, FFIType, ptr, read } from "bun:ffi";
import { Code, TtrpcError } from "./errors.ts";

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
/** sizeof(struct sockaddr_un): sa_family_t, then sun_path[108]. */
const SOCKADDR_UN_SIZE = 110;
const SUN_PATH_MAX = 107; // 108 bytes with the terminating NUL

/** Who is on the other end of a unix socket, as the kernel recorded it at connect(2). */
export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

const { i32, ptr: P } = FFIType;
const symbols = {
  getsockopt: { args: [i32, i32, i32, P, P], returns: i32 },
  socket: { args: [i32, i32, i32], returns: i32 },
  bind: { args: [i32, P, i32], returns: i32 },
  listen: { args: [i32, i32], returns: i32 },
  close: { args: [i32], returns: i32 },
  __errno_location: { args: [], returns: P },
} as const;

type Libc = ReturnType<typeof dlopen<typeof symbols>>["symbols"];
let libc: Libc | null = null;

function load(): Libc {
  if (libc !== null) return libc;
  const arch = process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : null;
  if (process.platform !== "linux" || arch === null) {
    throw new Error(
      `ttrpc: peer credentials and fd listeners need Linux on x86_64 or aarch64 (SO_PEERCRED, struct ucred); this is ${process.platform}/${process.arch}`,
    );
  }
  // glibc's soname first, then musl's (Alpine), where there is no libc.so.6.
  let lastError: unknown;
  for (const name of ["libc.so.6", `libc.musl-${arch}.so.1`]) {
    try {
      libc = dlopen(name, symbols).symbols;
      return libc;
    } catch (e) {
      lastError = e;
    }
  }
  throw new Error(`ttrpc: cannot load libc: ${String(lastError)}`);
}

/** errno of the call that just failed; read at once, on the same thread. */
function errno(c: Libc): number {
  const p = c.__errno_location();
  return p ? read.i32(p, 0) : 0;
}

/** The peer's pid, uid and gid for a connected unix socket fd (getsockopt SO_PEERCRED). */
export function peerCredentials(fd: number): PeerCredentials {
  if (!Number.isInteger(fd) || fd < 0) throw new Error(`ttrpc: no socket fd to read peer credentials from (got ${fd})`);
  const c = load();
  const ucred = new Int32Array(3);
  const len = new Uint32Array([ucred.byteLength]);
  if (c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ptr(ucred), ptr(len)) !== 0) {
    throw new Error(`ttrpc: getsockopt(SO_PEERCRED) on fd ${fd} failed: errno ${errno(c)}`);
  }
  // uid_t and gid_t are unsigned: (uid_t)-1 is 4294967295, not -1.
  return { pid: ucred[0]!, uid: ucred[1]! >>> 0, gid: ucred[2]! >>> 0 };
}

/**
 * Creates a unix socket bound to `path` and listening, and returns its fd (close-on-exec,
 * so it reaches only the child it is explicitly given to, e.g. through Bun.spawn's stdio).
 * An existing file at `path` is not replaced: that fails with EADDRINUSE, which is how two
 * processes racing to serve one address learn that the other one won.
 */
export function bindUnixSocket(path: string, backlog = 128): number {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length === 0 || bytes.length > SUN_PATH_MAX)
    throw new Error(`ttrpc: unix socket path must be 1..${SUN_PATH_MAX} bytes: ${path}`);
  const c = load();
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, 2);
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw socketError("socket", path, errno(c));
  if (c.bind(fd, ptr(addr), 2 + bytes.length + 1) !== 0 || c.listen(fd, backlog) !== 0) {
    const err = errno(c);
    c.close(fd);
    throw socketError("bind/listen", path, err);
  }
  return fd;
}

/** Closes an fd from bindUnixSocket that will not be served here (e.g. after handing it to a child). */
export function closeFd(fd: number): void {
  load().close(fd);
}

const errnoNames: Record<number, string> = { 2: "ENOENT", 13: "EACCES", 98: "EADDRINUSE", 24: "EMFILE" };

function socketError(call: string, path: string, err: number): Error & { code?: string; errno: number } {
  const code = errnoNames[err];
  const e = Object.assign(new Error(`ttrpc: ${call} ${path}: ${code ?? `errno ${err}`}`), { errno: err }) as Error & {
    code?: string;
    errno: number;
  };
  if (code !== undefined) e.code = code;
  return e;
}

/** A handshaker result check: the peer must run as this uid and/or gid (an omitted one is not checked). */
export function requireCredentials(want: { uid?: number; gid?: number }): (conn: { fd: number }) => PeerCredentials {
  return ({ fd }) => {
    const peer = peerCredentials(fd);
    if ((want.uid !== undefined && peer.uid !== want.uid) || (want.gid !== undefined && peer.gid !== want.gid)) {
      throw new TtrpcError(
        Code.PERMISSION_DENIED,
        `ttrpc: peer pid ${peer.pid} (uid ${peer.uid}, gid ${peer.gid}) refused: want uid ${want.uid ?? "any"}, gid ${want.gid ?? "any"}`,
      );
    }
    return peer;
  };
}

/**
 * A handshaker that accepts only peers running as our effective uid and gid, as
 * containerd's shims do (Go ttrpc's UnixSocketRequireSameUser checks both). The peer's
 * credentials become each call's `ctx.handshake`.
 */
export function requireSameUser(): (conn: { fd: number }) => PeerCredentials {
  return requireCredentials({ uid: process.geteuid!(), gid: process.getegid!() });
}
