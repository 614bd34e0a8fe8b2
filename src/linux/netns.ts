// A listening TCP socket inside another network namespace (a pod's), for a process that
// lives in its own: the shared-mode daemon serves a wasi:http container on it
// (docs/ARCHITECTURE.md, "wasi:http services").
//
// A socket belongs to the network namespace of the thread that created it, for its whole
// life, whichever thread or namespace later uses it. setns(CLONE_NEWNET) switches the calling
// thread only, so one synchronous sequence on this thread does it: save this thread's
// namespace (/proc/thread-self/ns/net), enter the pod's, socket(2), enter the saved one
// again. No JavaScript can run on this thread in between (no await), and no other thread is
// affected. bind and listen come after the switch back: they act on the socket's namespace,
// so the thread spends only one syscall in the pod's.

import { closeSync, constants, openSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import {
  AF_INET,
  AF_INET6,
  bindRaw,
  CLONE_NEWNET,
  listen,
  SO_REUSEADDR,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  SOL_SOCKET,
  setns,
  setsockoptInt,
  socket,
  strerror,
} from "./libc.ts";

/** Switching back failed: this thread is still in another namespace (the caller must not go on). */
export class NetnsRestoreError extends Error {}

/** "0.0.0.0:8080", "[::]:8080" → family and sockaddr bytes; throws on anything else. */
export function sockaddrOf(addr: string): { family: number; bytes: Uint8Array } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) throw new Error(`socket address ${JSON.stringify(addr)}: want IP:port ([IPv6]:port)`);
  const v6 = m[1];
  const v4 = m[2];
  if (v4 !== undefined) {
    if (!isIPv4(v4)) throw new Error(`socket address ${JSON.stringify(addr)}: ${v4} is not an IPv4 address`);
    // struct sockaddr_in: family (host order), port (network order), address, 8 bytes of zero.
    const b = new Uint8Array(16);
    const dv = new DataView(b.buffer);
    dv.setUint16(0, AF_INET, true);
    dv.setUint16(2, port, false);
    b.set(v4.split(".").map(Number), 4);
    return { family: AF_INET, bytes: b };
  }
  if (v6 === undefined || !isIPv6(v6)) throw new Error(`socket address ${JSON.stringify(addr)}: not an IPv6 address`);
  // struct sockaddr_in6: family, port, flowinfo (0), 16 address bytes, scope id (0).
  const b = new Uint8Array(28);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, AF_INET6, true);
  dv.setUint16(2, port, false);
  b.set(ipv6Bytes(v6), 8);
  return { family: AF_INET6, bytes: b };
}

/** The 16 bytes of a textual IPv6 address (already checked by isIPv6), "::" and a dotted tail included. */
function ipv6Bytes(text: string): number[] {
  let s = text;
  const tail: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted?.[1]) {
    const q = dotted[1].split(".").map(Number);
    tail.push(((q[0] as number) << 8) | (q[1] as number), ((q[2] as number) << 8) | (q[3] as number));
    s = s.slice(0, -dotted[1].length);
    if (s.endsWith(":") && !s.endsWith("::")) s = s.slice(0, -1);
  }
  const [head = "", rest] = s.split("::");
  const words = (part: string) => (part ? part.split(":").map((h) => Number.parseInt(h, 16)) : []);
  const hi = words(head);
  const lo = [...words(rest ?? ""), ...tail];
  const fill = rest === undefined ? [] : new Array<number>(8 - hi.length - lo.length).fill(0);
  return [...hi, ...fill, ...lo].flatMap((w) => [w >> 8, w & 0xff]);
}

/**
 * A listening TCP socket (close-on-exec, blocking: the taker sets its own mode) bound to
 * `addr` with `backlog`, created in the network namespace at `netnsPath` (a /var/run/netns
 * file or /proc/<pid>/ns/net), or in this thread's when there is none. The caller owns the fd.
 */
export function listenTcp(addr: string, backlog: number, netnsPath?: string): number {
  const { family, bytes } = sockaddrOf(addr);
  const fd = netnsPath === undefined ? newSocket(family) : socketIn(netnsPath, family);
  try {
    // As the library's own bind (and `wasmtime serve`): a restarted service rebinds at once.
    check(setsockoptInt(fd, SOL_SOCKET, SO_REUSEADDR, 1), "setsockopt SO_REUSEADDR");
    check(bindRaw(fd, bytes), `bind ${addr}`);
    check(listen(fd, backlog), `listen ${addr}`);
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

function newSocket(family: number): number {
  return check(socket(family, SOCK_STREAM | SOCK_CLOEXEC), "socket");
}

function socketIn(netnsPath: string, family: number): number {
  let target: number;
  try {
    target = openSync(netnsPath, constants.O_RDONLY | 0o2000000 /* O_CLOEXEC */);
  } catch (e) {
    throw new Error(`network namespace ${netnsPath}: ${e instanceof Error ? e.message : String(e)}`);
  }
  let own = -1;
  try {
    own = openSync("/proc/thread-self/ns/net", constants.O_RDONLY | 0o2000000);
    check(setns(target, CLONE_NEWNET), `setns ${netnsPath}`);
    let fd = -1;
    let err: unknown;
    try {
      fd = newSocket(family);
    } catch (e) {
      err = e;
    }
    const [r, errno] = setns(own, CLONE_NEWNET);
    if (r < 0) {
      if (fd >= 0) closeSync(fd);
      throw new NetnsRestoreError(`setns back to this thread's network namespace: ${strerror(errno)}`);
    }
    if (err) throw err;
    return fd;
  } finally {
    if (own >= 0) closeSync(own);
    closeSync(target);
  }
}

function check([r, errno]: [number, number], what: string): number {
  if (r < 0) throw new Error(`${what}: ${strerror(errno)}`);
  return r;
}
