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
//
// Layouts are WASI preview 1's (wasi_snapshot_preview1.witx), little-endian:
//   filestat (64 bytes): dev u64 @0, ino u64 @8, filetype u8 @16, nlink u64 @24, size u64 @32,
//   atim @40, mtim @48, ctim @56.

/** WASI errno values returned to the module. */
export const ERRNO_SUCCESS = 0;
export const ERRNO_ACCES = 2;
export const ERRNO_MFILE = 33;

export const FILESTAT_SIZE = 64;
export const FILESTAT_FILETYPE = 16;
/** lookupflags bit 0: follow a symlink at the end of the path. */
export const LOOKUP_SYMLINK_FOLLOW = 1;

const FILETYPE_DIRECTORY = 3;
const FILETYPE_REGULAR_FILE = 4;
const FILETYPE_SYMBOLIC_LINK = 7;

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

/**
 * The host directory behind each of a run's directory handles: its preopens (numbered from 3 in
 * the order they were given, after stdio), and each directory it opens. A handle renamed on the
 * host meanwhile keeps its old path here: looks from it then disagree or fail, and the slow way
 * decides. An O_PATH fd of each preopen (where nearly every open starts: wasi-libc resolves
 * absolute paths from "/") and of the last other directory used is kept, not one per handle: a
 * module's handles would cost the host twice their number.
 */
export class GuestDirs {
  private readonly dirs = new Map<number, string>();
  private readonly preopens: number;
  private readonly fds = new Map<number, number>();
  private last: { fd: number; host: string; dirFd: number } | undefined;

  constructor(preopens: string[]) {
    preopens.forEach((p, i) => {
      this.dirs.set(3 + i, p);
    });
    this.preopens = preopens.length;
  }

  /** An O_PATH fd of the host directory behind the module's handle `fd`; undefined if unknown. */
  dirFd(fd: number): number | undefined {
    const host = this.dirs.get(fd);
    if (host === undefined) return undefined;
    const isPreopen = fd >= 3 && fd < 3 + this.preopens && !this.moved.has(fd);
    if (isPreopen) {
      const have = this.fds.get(fd);
      if (have !== undefined) return have;
    } else if (this.last && this.last.fd === fd && this.last.host === host) return this.last.dirFd;
    const c = sys();
    const [d] = c.openat(c.AT_FDCWD, new TextEncoder().encode(`${host}\0`), c.O_PATH | c.O_DIRECTORY);
    if (d < 0) return undefined;
    if (isPreopen) this.fds.set(fd, d);
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
    if (host !== undefined) this.dirs.set(fd, host);
  }

  closed(fd: number): void {
    this.forget(fd);
  }

  renumbered(from: number, to: number): void {
    const d = this.dirs.get(from);
    this.forget(from);
    this.forget(to);
    if (d !== undefined) this.dirs.set(to, d);
  }

  /** Closes the fds kept (the run is over). */
  dispose(): void {
    for (const fd of this.fds.values()) sys().close(fd);
    this.fds.clear();
    if (this.last) sys().close(this.last.dirFd);
    this.last = undefined;
  }

  private forget(fd: number): void {
    this.dirs.delete(fd);
    if (fd >= 3 && fd < 3 + this.preopens) this.moved.add(fd);
    const kept = this.fds.get(fd);
    if (kept !== undefined) {
      sys().close(kept);
      this.fds.delete(fd);
    }
    if (this.last?.fd === fd) {
      sys().close(this.last.dirFd);
      this.last = undefined;
    }
  }
}
