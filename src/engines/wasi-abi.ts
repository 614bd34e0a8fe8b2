// The numbers of WASI preview 1's ABI (wasi_snapshot_preview1.witx) that an engine's own
// functions read from a guest or answer it with: defined here once, for every run path
// (a run thread's shadows, a run pool's answers, the file guard's rules). Only what they use.
//
// Layouts are little-endian:
//   subscription (48 bytes): userdata u64 @0, tag u8 @8, then at @16 a clock's id u32 @16,
//     timeout u64 @24, precision u64 @32, flags u16 @40 (bit 0: absolute), or an fd u32 @16
//   event (32 bytes): userdata u64 @0, error u16 @8, type u8 @10, fd_readwrite @16 (nbytes
//     u64 @16, flags u16 @24)
//   filestat (64 bytes): dev u64 @0, ino u64 @8, filetype u8 @16, nlink u64 @24, size u64 @32,
//     atim @40, mtim @48, ctim @56

/** The module WASI preview 1's functions are imported from. */
export const WASI_MODULE = "wasi_snapshot_preview1";

// errno
export const ERRNO_SUCCESS = 0;
export const ERRNO_ACCES = 2;
export const ERRNO_BADF = 8;
export const ERRNO_INVAL = 28;
export const ERRNO_IO = 29;
export const ERRNO_MFILE = 33;
export const ERRNO_NOMEM = 48;
export const ERRNO_PIPE = 64;

// clockid
export const CLOCK_REALTIME = 0;
export const CLOCK_MONOTONIC = 1;

// poll_oneoff
export const SUBSCRIPTION_SIZE = 48;
export const EVENT_SIZE = 32;
export const EVENTTYPE_CLOCK = 0;
export const EVENTTYPE_FD_READ = 1;
export const EVENTTYPE_FD_WRITE = 2;
/** subclockflags bit 0: the timeout is an absolute time on its clock. */
export const SUBCLOCKFLAGS_ABSTIME = 1;

// filetype, filestat, lookupflags
export const FILETYPE_CHARACTER_DEVICE = 2;
export const FILETYPE_DIRECTORY = 3;
export const FILETYPE_REGULAR_FILE = 4;
export const FILETYPE_SYMBOLIC_LINK = 7;
export const FILESTAT_SIZE = 64;
export const FILESTAT_FILETYPE = 16;
/** lookupflags bit 0: follow a symlink at the end of the path. */
export const LOOKUP_SYMLINK_FOLLOW = 1;
