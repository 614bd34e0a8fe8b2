// What a module may open, and how many: the rules behind the worker's shadows of WASI preview
// 1's path_open, fd_close and fd_renumber (./worker.ts, reached as interruptible.ts's
// poll_oneoff is: our function first, wasmtime's own through a helper instance).
//
//  - Only regular files and directories (and a symlink itself, opened without following it,
//    which the kernel refuses anyway). A fifo's open waits for a peer and its reads for data,
//    a socket is nothing WASI preview 1 can use: a module would hold its thread, in the
//    shared-mode daemon one of the daemon's, in a call no kill can end. Device nodes are
//    already refused by the view's `nodev`. All of these fail with EACCES, in both modes.
//    What a path names is looked at before the open, and again after it: on the host, with
//    O_PATH (which opens nothing and waits on nothing) resolved beneath the host directory of
//    the module's directory handle as wasmtime resolves it (openat2 RESOLVE_BENEATH), a few
//    microseconds. Where that cannot tell (no such directory known, a kernel without openat2)
//    or the two looks differ (a file renamed in between), wasmtime's own path_filestat_get
//    before and fd_filestat_get after (about 0.2 ms each, on its runtime's threads) decide, and
//    what is not a file or directory is closed again at once, unread. What remains is a fifo
//    renamed in and out again during the open itself: the kill ends such a call
//    (src/daemon/unstick.ts in the daemon; in normal mode the process's death).
//  - At most `cap` handles at once (the spec's RLIMIT_NOFILE, bounded in shared mode by the
//    daemon's per-container cap): one more open fails with EMFILE, as it would for a process
//    at its limit. stdio and the preopened directories count, as a process's fds 0-2 do.

import {
  ERRNO_ACCES,
  ERRNO_MFILE,
  ERRNO_SUCCESS,
  FILESTAT_FILETYPE,
  FILESTAT_SIZE,
  FILETYPE_DIRECTORY,
  FILETYPE_REGULAR_FILE,
  FILETYPE_SYMBOLIC_LINK,
  LOOKUP_SYMLINK_FOLLOW,
} from "../wasi-abi.ts";

/**
 * Whether a module may open a file of WASI `filetype` (wasmtime reports a fifo as unknown, 0).
 * `followed`: the path's last symlink is followed, so a symlink here would be a dangling one.
 */
export function mayOpen(filetype: number, followed: boolean): boolean {
  return filetype === FILETYPE_DIRECTORY || filetype === FILETYPE_REGULAR_FILE || (!followed && filetype === FILETYPE_SYMBOLIC_LINK);
}

/**
 * Where `size` bytes of the guest's memory may be borrowed for a result only we read (saved
 * before and put back after; the guest is single-threaded and inside our call meanwhile):
 * 8-aligned, inside `memLength`, clear of the `avoid` ranges ([start, end) the call reads or
 * writes itself). Undefined if no such place (a memory of a few bytes).
 */
export function scratchOffset(memLength: number, size: number, avoid: [number, number][]): number | undefined {
  const candidates = [0, ...avoid.map(([, end]) => Math.ceil(end / 8) * 8)];
  for (const at of candidates) {
    if (at + size > memLength) continue;
    if (avoid.every(([s, e]) => e <= at || s >= at + size)) return at;
  }
  return undefined;
}

/** A run's open WASI handles against its cap. */
export class HandleCount {
  private open: number;

  /** `initial`: the handles the run starts with (stdio and preopens); `cap` undefined = no cap. */
  constructor(
    initial: number,
    private readonly cap?: number,
  ) {
    this.open = initial;
  }

  /** One more would pass the cap. */
  full(): boolean {
    return this.cap !== undefined && this.open >= this.cap;
  }

  opened(): void {
    this.open++;
  }

  closed(): void {
    if (this.open > 0) this.open--;
  }

  get count(): number {
    return this.open;
  }
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

/** What a path names, looked at on the host: a file of some kind (with its identity), or nothing. */
export type Look = { kind: "dir" | "file" | "link" | "special"; id: string; host?: string } | { kind: "missing" };

type Calls = typeof import("../../linux/path-calls.ts");
let calls: Calls | undefined;
/** Loaded on a run's first open, by the run thread that opens (a Worker binds its own). */
const sys = (): Calls => {
  calls ??= require("../../linux/path-calls.ts") as Calls;
  return calls;
};
/** openat2 answered ENOSYS (a kernel before 5.6): the slow way for every open. */
let noOpenat2 = false;

/**
 * `path` (the module's bytes, relative) as wasmtime would resolve it beneath the directory
 * `dirFd` (an O_PATH fd of the host directory behind a module's handle), looked at without
 * opening it; `follow`: a symlink at its end is followed. A directory's host path comes with it
 * (what a handle of it is on the host). Undefined when it cannot tell.
 */
export function lookBeneath(dirFd: number, path: Uint8Array, follow: boolean): Look | undefined {
  if (noOpenat2 || path.includes(0)) return undefined;
  const c = sys();
  const name = new Uint8Array(path.length + 1);
  name.set(path);
  const [fd, errno] = c.openat2(dirFd, name, c.O_PATH | (follow ? 0 : c.O_NOFOLLOW), c.RESOLVE_BENEATH | c.RESOLVE_NO_MAGICLINKS);
  if (fd < 0) {
    if (errno === c.ENOSYS) noOpenat2 = true;
    return errno === c.ENOENT || errno === c.ENOTDIR ? { kind: "missing" } : undefined;
  }
  try {
    const st = c.statxFd(fd);
    if ("errno" in st) return undefined;
    const type = st.mode & S_IFMT;
    if (type === S_IFDIR) return { kind: "dir", id: st.id, ...hostOf(c, fd) };
    return { kind: type === S_IFREG ? "file" : type === S_IFLNK ? "link" : "special", id: st.id };
  } finally {
    c.close(fd);
  }
}

function hostOf(c: Calls, fd: number): { host?: string } {
  const host = c.fdLinkPath(fd);
  return host?.startsWith("/") ? { host } : {};
}

/** Whether a module may open what a look found (a symlink only where it is not followed). */
export function mayOpenLook(look: Look, followed: boolean): boolean {
  return look.kind === "dir" || look.kind === "file" || look.kind === "missing" || (!followed && look.kind === "link");
}

/** Which of its stdio a guest's fd is: stdin, stdout, stderr. */
export type StdioRole = 0 | 1 | 2;

/**
 * What the guard knows of a run's fds, kept through its opens, closes and renumbers: which are
 * still its stdio (fds 0-2 at the start; a renumber moves one, a close ends it), and the host
 * directory behind each directory handle: its preopens (numbered from 3 in the order they were
 * given, after stdio), and each directory it opens. A handle renamed on the host meanwhile keeps
 * its old path here: looks from it then disagree or fail, and the slow way decides. An O_PATH fd
 * of each preopen (where nearly every open starts: wasi-libc resolves absolute paths from "/")
 * and of the last other directory used is kept, not one per handle: a module's handles would
 * cost the host twice their number.
 */
export class GuestFds {
  /** A stdio fd's role, or a directory handle's host path. */
  private readonly known = new Map<number, StdioRole | string>([
    [0, 0],
    [1, 1],
    [2, 2],
  ]);
  private readonly preopens: number;
  /** The O_PATH fd kept of each preopen still in its place. */
  private readonly preopenFds = new Map<number, number>();
  private last: { fd: number; host: string; dirFd: number } | undefined;

  constructor(preopens: string[]) {
    preopens.forEach((p, i) => {
      this.known.set(3 + i, p);
    });
    this.preopens = preopens.length;
  }

  /** Which of its stdio the guest's `fd` is now, if any. */
  stdioRole(fd: number): StdioRole | undefined {
    const k = this.known.get(fd);
    return typeof k === "number" ? k : undefined;
  }

  /** An O_PATH fd of the host directory behind the module's handle `fd`; undefined if unknown. */
  dirFd(fd: number): number | undefined {
    const host = this.known.get(fd);
    if (typeof host !== "string") return undefined;
    const isPreopen = fd >= 3 && fd < 3 + this.preopens && !this.moved.has(fd);
    if (isPreopen) {
      const have = this.preopenFds.get(fd);
      if (have !== undefined) return have;
    } else if (this.last && this.last.fd === fd && this.last.host === host) return this.last.dirFd;
    const c = sys();
    const [d] = c.openat(c.AT_FDCWD, new TextEncoder().encode(`${host}\0`), c.O_PATH | c.O_DIRECTORY);
    if (d < 0) return undefined;
    if (isPreopen) this.preopenFds.set(fd, d);
    else {
      if (this.last) c.close(this.last.dirFd);
      this.last = { fd, host, dirFd: d };
    }
    return d;
  }

  /** Handles whose number a renumber took over: no longer what the preopen was. */
  private readonly moved = new Set<number>();

  opened(fd: number, host: string | undefined): void {
    this.forget(fd);
    if (host !== undefined) this.known.set(fd, host);
  }

  closed(fd: number): void {
    this.forget(fd);
  }

  renumbered(from: number, to: number): void {
    const k = this.known.get(from);
    this.forget(from);
    this.forget(to);
    if (k !== undefined) this.known.set(to, k);
  }

  /** Closes the fds kept (the run is over). */
  dispose(): void {
    for (const fd of this.preopenFds.values()) sys().close(fd);
    this.preopenFds.clear();
    if (this.last) sys().close(this.last.dirFd);
    this.last = undefined;
  }

  private forget(fd: number): void {
    this.known.delete(fd);
    if (fd >= 3 && fd < 3 + this.preopens) this.moved.add(fd);
    const kept = this.preopenFds.get(fd);
    if (kept !== undefined) {
      sys().close(kept);
      this.preopenFds.delete(fd);
    }
    if (this.last?.fd === fd) {
      sys().close(this.last.dirFd);
      this.last = undefined;
    }
  }
}

// The guard's calls, each a generator: it asks for wasmtime's own WASI functions by yielding
// them (name and arguments) and is handed back what each gave. So the rules are written once
// and run by both run paths: a run of its own calls wasmtime's function from its host function
// and resumes at once (./wasi-shadows.ts); a pool, whose host functions must not call into the
// store (it is driven through the async API), parks the call, answers with the call to make,
// and a wasm trampoline in the store makes it and comes back with its errno (./pool-guard.ts).

/** The signatures of wasmtime's own WASI functions the shadows reach (wasi_snapshot_preview1.witx). */
export const REAL_WASI = {
  poll_oneoff: ["i32", "i32", "i32", "i32"],
  path_open: ["i32", "i32", "i32", "i32", "i32", "i64", "i64", "i32", "i32"],
  path_filestat_get: ["i32", "i32", "i32", "i32", "i32"],
  fd_filestat_get: ["i32", "i32"],
  fd_close: ["i32"],
  fd_renumber: ["i32", "i32"],
  fd_fdstat_get: ["i32", "i32"],
  fd_read: ["i32", "i32", "i32", "i32"],
  fd_write: ["i32", "i32", "i32", "i32"],
} as const satisfies Record<string, readonly ("i32" | "i64")[]>;
export type RealName = keyof typeof REAL_WASI;

/** One call of wasmtime's own function: i32 arguments as numbers, i64 ones as bigints. */
export interface RealCall {
  name: RealName;
  args: (number | bigint)[];
}

/**
 * What such a call gave: its errno, or a trap for the guest (`T`: whatever the run path's traps
 * are; a pool's trampoline never comes back from one, so there it is `never`).
 */
export type RealOutcome<T> = { errno: number } | { trap: T };

/** What one of the guard's calls ends with: the errno for the module, or a trap to hand on. */
export type GuardCall<T> = Generator<RealCall, RealOutcome<T>, RealOutcome<T>>;

/** One run's guard: its count of handles, what it knows of its fds, and how to see its memory. */
export interface GuardRun<T> {
  handles: HandleCount;
  fds: GuestFds;
  /** The guest's memory as it is now (re-read after each real call). */
  memory(): Uint8Array;
  /** The run was killed: a trap is then the kill's, handed on. */
  killed(): boolean;
  /** Frees a trap the guard does not hand on. */
  drop(trap: T): void;
}

/** The filetype a stat (into a borrowed 64-byte buffer; `avoid`: what the call itself uses) reports, or what it gave instead. */
function* statInto<T>(
  run: GuardRun<T>,
  avoid: [number, number][],
  call: (buf: number) => RealCall,
): Generator<RealCall, { filetype: number } | RealOutcome<T> | undefined, RealOutcome<T>> {
  const mem = run.memory();
  const at = scratchOffset(mem.length, FILESTAT_SIZE, avoid);
  if (at === undefined) return undefined;
  const saved = mem.slice(at, at + FILESTAT_SIZE);
  try {
    const r = yield call(at);
    if ("trap" in r || r.errno !== ERRNO_SUCCESS) return r;
    return { filetype: run.memory()[at + FILESTAT_FILETYPE] as number };
  } finally {
    run.memory().set(saved, at);
  }
}

/**
 * path_open(dirfd, lookupflags, path, path_len, oflags, rights_base, rights_inheriting,
 * fdflags, fd_out): only regular files and directories are opened (EACCES otherwise, before the
 * open where the path already names something else), at most the cap at once (EMFILE).
 */
export function* pathOpenRule<T>(run: GuardRun<T>, args: (number | bigint)[]): GuardCall<T> {
  const [dirfd, lookup, pathPtr, pathLen] = args.slice(0, 4).map(Number) as [number, number, number, number];
  const fdOut = Number(args[8]) >>> 0;
  if (run.handles.full()) return { errno: ERRNO_MFILE };
  const followed = (lookup & LOOKUP_SYMLINK_FOLLOW) !== 0;
  const p0 = pathPtr >>> 0;
  const p1 = p0 + (pathLen >>> 0);
  const avoid: [number, number][] = [
    [p0, p1],
    [fdOut, fdOut + 4],
  ];
  // What the path names now (a fifo's open would wait): looked at on the host, or by
  // wasmtime's own resolution where that cannot tell.
  const base = run.fds.dirFd(dirfd);
  const path = run.memory().slice(p0, p1);
  const look = base === undefined ? undefined : lookBeneath(base, path, followed);
  if (look && !mayOpenLook(look, followed)) return { errno: ERRNO_ACCES };
  if (!look) {
    const before = yield* statInto(run, avoid, (buf) => ({ name: "path_filestat_get", args: [dirfd, lookup, pathPtr, pathLen, buf] }));
    if (before && "trap" in before) {
      // wasmtime's stat fails outright on a socket ("sockets are not currently supported"):
      // refused as such; the run's own kill is its trap.
      if (run.killed()) return before;
      run.drop(before.trap);
      return { errno: ERRNO_ACCES };
    }
    if (before && "filetype" in before && !mayOpen(before.filetype, followed)) return { errno: ERRNO_ACCES };
  }
  // Anything else (a missing path, a file to create, an error the open reports too): the open.
  const r = yield { name: "path_open", args };
  if ("trap" in r || r.errno !== ERRNO_SUCCESS) return r;
  const mem = run.memory();
  const fd = new DataView(mem.buffer, mem.byteOffset, mem.byteLength).getInt32(fdOut, true);
  // What was opened: the same file the look found (or a file it created), or else what
  // wasmtime says it is; a fifo renamed in between (its open found a peer) is closed unread.
  const again = base === undefined ? undefined : lookBeneath(base, path, followed);
  const same =
    look !== undefined &&
    again !== undefined &&
    again.kind !== "missing" &&
    mayOpenLook(again, followed) &&
    (look.kind === "missing" || ("id" in again && "id" in look && again.id === look.id));
  if (!same) {
    const after = yield* statInto(run, [[fdOut, fdOut + 4]], (buf) => ({ name: "fd_filestat_get", args: [fd, buf] }));
    if (!after || "trap" in after || ("filetype" in after && !mayOpen(after.filetype, followed))) {
      if (after && "trap" in after) run.drop(after.trap);
      const closed = yield { name: "fd_close", args: [fd] };
      if ("trap" in closed) return closed;
      return { errno: ERRNO_ACCES };
    }
  }
  run.fds.opened(fd, same && again?.kind === "dir" ? again.host : undefined);
  run.handles.opened();
  return { errno: ERRNO_SUCCESS };
}

/** fd_close(fd): wasmtime's, and one handle fewer. */
export function* fdCloseRule<T>(run: GuardRun<T>, args: (number | bigint)[]): GuardCall<T> {
  const r = yield { name: "fd_close", args };
  if (!("trap" in r) && r.errno === ERRNO_SUCCESS) {
    run.handles.closed();
    run.fds.closed(Number(args[0]));
  }
  return r;
}

/** fd_renumber(from, to): wasmtime's; `to` was closed and `from` took its number. */
export function* fdRenumberRule<T>(run: GuardRun<T>, args: (number | bigint)[]): GuardCall<T> {
  const [from, to] = [Number(args[0]), Number(args[1])];
  const r = yield { name: "fd_renumber", args };
  if (!("trap" in r) && r.errno === ERRNO_SUCCESS && from !== to) {
    run.handles.closed();
    run.fds.renumbered(from, to);
  }
  return r;
}

/** The guard's calls by the WASI function they stand for. */
export const GUARD_RULES = { path_open: pathOpenRule, fd_close: fdCloseRule, fd_renumber: fdRenumberRule } as const;
export type GuardName = keyof typeof GUARD_RULES;

/** Runs one of the guard's calls to its end, making each real call it asks for with `real`. */
export function runGuard<T>(call: GuardCall<T>, real: (c: RealCall) => RealOutcome<T>): RealOutcome<T> {
  let step = call.next();
  while (!step.done) step = call.next(real(step.value));
  return step.value;
}
