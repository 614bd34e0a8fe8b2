// What a module may open, and how many: the rules behind the worker's shadows of WASI preview
// 1's path_open, fd_close and fd_renumber (./worker.ts, reached as interruptible.ts's
// poll_oneoff is: our function first, wasmtime's own through a helper instance).
//
//  - Only regular files and directories (and a symlink itself, opened without following it,
//    which the kernel refuses anyway). A fifo's open waits for a peer and its reads for data,
//    a socket is nothing WASI preview 1 can use: a module would hold its thread, in the
//    shared-mode daemon one of the daemon's, in a call no kill can end. Device nodes are
//    already refused by the view's `nodev`. All of these fail with EACCES, in both modes.
//    What a path names is asked before the open (wasmtime's path_filestat_get, which waits on
//    nothing) and what was opened after it (fd_filestat_get): a fifo renamed in between is
//    closed again at once, and is never read.
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
