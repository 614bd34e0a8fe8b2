// The one libc binding of the shim, through bun:ffi: exit monitoring (linux/exit-watcher.ts),
// rootfs mounts (oci/rootfs.ts), fifo flags (task/stdio.ts), the runtime's console socket and
// terminal sizes (linux/console.ts), the daemon's own ptys (linux/pty.ts), fifos and the open-file limit (the shared-mode daemon,
// src/daemon/), idmapped mounts of a module's view (linux/idmap.ts),
// the daemon's re-execution (linux/reexec.ts) and malloc_trim (daemon/give-back.ts), and a
// run thread's Linux id, CPU time and nice value (engines/wasmtime/worker.ts, cpu-throttle.ts).
// Linux on x86_64 and aarch64.
//
// Variadic libc functions (prctl, fcntl, syscall's own prototype) are reached through glibc's
// `syscall()`, which is written in assembly and never touches va_list, so calling it with a
// fixed integer prototype is sound. The other functions have plain prototypes.
// errno is read through __errno_location() right after the failing call, on the same thread.
//
// Bound in groups, each on the first use of one of its functions: a dlopen costs about 4 KiB
// and each symbol 1 KiB more (Bun compiles a trampoline per symbol; measured with 230 symbols
// bound one dlopen each and ten at a time), so what a shim server uses is one group, and a
// caller of one or two functions elsewhere (a run thread's gettid, the daemon's execve and
// malloc_trim) binds those alone instead of the server's two dozen. Once per thread: a Worker
// evaluates this module anew, so it binds its own (libc is already mapped, dlopen only takes a
// reference), and never calls function objects of another thread.

import { dlopen, type FFIFunction, FFIType, type Library, type Pointer, ptr, read } from "bun:ffi";
import { STATUS_UNKNOWN } from "../common/constants.ts";

/** System call numbers differ per architecture; a wrong table would call the wrong syscall. */
const SYSCALLS = {
  x64: { ioctl: 16, fcntl: 72, prctl: 157, waitid: 247, pidfd_send_signal: 424, pidfd_open: 434, setns: 308, memfd_create: 319 },
  arm64: { ioctl: 29, fcntl: 25, prctl: 167, waitid: 95, pidfd_send_signal: 424, pidfd_open: 434, setns: 268, memfd_create: 279 },
};

interface SyscallTable {
  ioctl: number;
  fcntl: number;
  prctl: number;
  waitid: number;
  pidfd_send_signal: number;
  pidfd_open: number;
  setns: number;
  memfd_create: number;
}

/** The table of this machine; throws on an architecture we have no numbers for. */
export function syscallTable(arch: string = process.arch): SyscallTable {
  const t: SyscallTable | undefined = (SYSCALLS as Record<string, SyscallTable>)[arch];
  if (!t || process.platform !== "linux") {
    throw new Error(`bunwasi runs on Linux x86_64 and aarch64 only (this is ${process.platform}/${arch})`);
  }
  return t;
}

export const PR_SET_CHILD_SUBREAPER = 36;
export const PR_GET_CHILD_SUBREAPER = 37;

// waitid
export const P_ALL = 0;
export const P_PID = 1;
export const P_PIDFD = 3;
export const WNOHANG = 1;
export const WEXITED = 4;
export const WNOWAIT = 0x01000000;
// siginfo si_code for SIGCHLD
export const CLD_EXITED = 1;
export const CLD_KILLED = 2;
export const CLD_DUMPED = 3;

// poll
export const POLLIN = 0x001;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;

export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;

export const EINTR = 4;
export const ESRCH = 3;
export const ECHILD = 10;
export const EAGAIN = 11;
export const EINVAL = 22;
export const ENOSYS = 38;

/** sizeof(siginfo_t) on 64-bit Linux. */
export const SIGINFO_SIZE = 128;
/** sizeof(struct pollfd): int fd; short events; short revents. */
export const POLLFD_SIZE = 8;

const { i32, i64, ptr: P, u32, u64, cstring } = FFIType;

/** A group of libc functions, bound together on the first call of `get()` in this thread. */
function bindOnUse<const Fns extends Record<string, FFIFunction>>(symbols: Fns): () => Library<Fns>["symbols"] {
  let bound: Library<Fns>["symbols"] | undefined;
  return () => {
    bound ??= dlopen("libc.so.6", symbols).symbols;
    return bound;
  };
}

/** What a shim server uses (and the daemon, which uses the same and a little more). */
const core = bindOnUse({
  syscall: { args: [i64, i64, i64, i64, i64], returns: i64 },
  waitid: { args: [i32, u32, P, i32], returns: i32 },
  poll: { args: [P, u32, i32], returns: i32 },
  close: { args: [i32], returns: i32 },
  read: { args: [i32, P, i64], returns: i64 },
  write: { args: [i32, P, i64], returns: i64 },
  eventfd: { args: [u32, i32], returns: i32 },
  inotify_init1: { args: [i32], returns: i32 },
  inotify_add_watch: { args: [i32, P, u32], returns: i32 },
  mount: { args: [P, P, P, u64, P], returns: i32 },
  umount2: { args: [P, i32], returns: i32 },
  mkfifo: { args: [P, u32], returns: i32 },
  pipe2: { args: [P, i32], returns: i32 },
  getrlimit: { args: [i32, P], returns: i32 },
  setrlimit: { args: [i32, P], returns: i32 },
  strerror: { args: [i32], returns: cstring },
  socket: { args: [i32, i32, i32], returns: i32 },
  bind: { args: [i32, P, u32], returns: i32 },
  listen: { args: [i32, i32], returns: i32 },
  accept4: { args: [i32, P, P, i32], returns: i32 },
  recvmsg: { args: [i32, P, i32], returns: i64 },
  __errno_location: { args: [], returns: P },
});

/** The core group, on a machine whose syscall numbers we know (refused before anything is bound). */
function libc() {
  nrs();
  return core();
}

/** errno of the last failing libc call on this thread. */
export function errno(): number {
  return errnoOf(libc().__errno_location());
}

function errnoOf(p: Pointer | bigint | null): number {
  return p ? read.i32((typeof p === "bigint" ? Number(p) : p) as Pointer, 0) : 0;
}

/** A failing call as [-1, errno]; a succeeding one as [result, 0]. */
function check(r: number | bigint): [number, number] {
  const n = Number(r);
  return n < 0 ? [-1, errno()] : [n, 0];
}

let nr: SyscallTable | undefined;
function nrs(): SyscallTable {
  nr ??= syscallTable();
  return nr;
}

function sys(nr: number, a = 0, b = 0, c2 = 0, d = 0): [number, number] {
  return check(libc().syscall(nr, a, b, c2, d));
}

const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

/** Clears O_NONBLOCK on fd (fcntl through syscall(2): no variadic call through FFI). */
export function setBlocking(fd: number): [number, number] {
  const [flags, err] = sys(nrs().fcntl, fd, F_GETFL);
  if (flags < 0) return [flags, err];
  return sys(nrs().fcntl, fd, F_SETFL, flags & ~O_NONBLOCK);
}

/** Sets O_NONBLOCK on fd: reads and writes then answer EAGAIN instead of stalling the thread. */
export function setNonBlocking(fd: number): [number, number] {
  const [flags, err] = sys(nrs().fcntl, fd, F_GETFL);
  if (flags < 0) return [flags, err];
  return sys(nrs().fcntl, fd, F_SETFL, flags | O_NONBLOCK);
}

export function prctl(option: number, arg2 = 0, arg3 = 0, arg4 = 0): [number, number] {
  return sys(nrs().prctl, option, arg2, arg3, arg4);
}

/** pidfd_open(2): a pidfd for pid (O_CLOEXEC is implied for pidfds). */
export function pidfdOpen(pid: number, flags = 0): [number, number] {
  return sys(nrs().pidfd_open, pid, flags);
}

/** pidfd_send_signal(2) with no siginfo. sig 0 checks that the process still exists (zombie included). */
export function pidfdSendSignal(fd: number, sig: number): [number, number] {
  return sys(nrs().pidfd_send_signal, fd, sig, 0, 0);
}

/** waitid(2) into a caller-owned 128-byte siginfo buffer (zeroed here first). */
export function waitid(idtype: number, id: number, info: Uint8Array, options: number): [number, number] {
  if (info.byteLength < SIGINFO_SIZE) throw new RangeError("siginfo buffer too small");
  info.fill(0);
  return check(libc().waitid(idtype, id >>> 0, ptr(info), options));
}

/** poll(2) over a buffer of `n` struct pollfd. */
export function poll(fds: Uint8Array, n: number, timeoutMs: number): [number, number] {
  return check(libc().poll(ptr(fds), n, timeoutMs));
}

export function close(fd: number): [number, number] {
  return check(libc().close(fd));
}

export function eventfd(initval: number, flags: number): [number, number] {
  return check(libc().eventfd(initval, flags));
}

/** Adds 1 to an eventfd counter. */
export function eventfdSignal(fd: number): [number, number] {
  const b = new BigUint64Array([1n]);
  return check(libc().write(fd, ptr(b), 8));
}

/** Drains an eventfd counter (non-blocking fd: EAGAIN when already zero). */
export function eventfdDrain(fd: number): [number, number] {
  const b = new BigUint64Array(1);
  return check(libc().read(fd, ptr(b), 8));
}

export const IN_NONBLOCK = 0o4000;
export const IN_CLOEXEC = 0o2000000;
export const IN_MODIFY = 0x2;

/** inotify_init1(2). */
export function inotifyInit(flags: number): [number, number] {
  return check(libc().inotify_init1(flags));
}

/** inotify_add_watch(2) of one path. */
export function inotifyAddWatch(fd: number, path: string, mask: number): [number, number] {
  return check(libc().inotify_add_watch(fd, ptr(cstr(path)), mask));
}

/** Reads a non-blocking fd until it has nothing more (EAGAIN): what an inotify fd queued. */
export function drain(fd: number): void {
  const b = new Uint8Array(4096);
  for (;;) {
    const [n] = check(libc().read(fd, ptr(b), b.byteLength));
    if (n <= 0) return;
  }
}

/** Fields of a SIGCHLD siginfo_t (the generic 64-bit layout: x86_64 and aarch64 alike). */
export interface ChildInfo {
  signo: number; // @0
  code: number; // @8
  pid: number; // @16
  uid: number; // @20
  status: number; // @24
}

export function decodeSiginfo(info: Uint8Array): ChildInfo {
  const v = new DataView(info.buffer, info.byteOffset, SIGINFO_SIZE);
  return {
    signo: v.getInt32(0, true),
    code: v.getInt32(8, true),
    pid: v.getInt32(16, true),
    uid: v.getUint32(20, true),
    status: v.getInt32(24, true),
  };
}

/** Shell-style status: exit code, or 128+signal when killed by a signal. */
export function shellStatus(ci: ChildInfo): number {
  if (ci.code === CLD_EXITED) return ci.status & 0xff;
  if (ci.code === CLD_KILLED || ci.code === CLD_DUMPED) return 128 + ci.status;
  return STATUS_UNKNOWN;
}

/** Shell-style status from a raw wait(2) status word (as in /proc/<pid>/stat's exit_code). */
export function shellStatusFromWaitStatus(ws: number): number {
  const sig = ws & 0x7f;
  if (sig === 0) return (ws >> 8) & 0xff;
  return 128 + sig;
}

/** strerror(3) text for an errno value. */
export function strerror(e: number): string {
  return String(libc().strerror(e));
}

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`);
}

/** mount(2); [0, 0] or [-1, errno]. A null fstype or data passes NULL. */
export function mount(source: string, target: string, fstype: string | null, flags: number, data: string | null): [number, number] {
  const src = cstr(source);
  const dst = cstr(target);
  const type = fstype === null ? null : cstr(fstype);
  const dat = data === null ? null : cstr(data);
  return check(libc().mount(ptr(src), ptr(dst), type ? ptr(type) : null, BigInt(flags), dat ? ptr(dat) : null));
}

/** umount2(2); [0, 0] or [-1, errno]. */
export function umount2(target: string, flags: number): [number, number] {
  return check(libc().umount2(ptr(cstr(target)), flags));
}

/** mkfifo(3) (no Node or Bun API makes a fifo); [0, 0] or [-1, errno]. */
export function mkfifo(path: string, mode = 0o600): [number, number] {
  return check(libc().mkfifo(ptr(cstr(path)), mode));
}

/** RLIMIT_NOFILE: 7 in the generic table, which x86_64 and aarch64 both use. */
export const RLIMIT_NOFILE = 7;
/** RLIM_INFINITY as the kernel reports it (all bits set). */
export const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

/** getrlimit(2): { soft, hard }, or the errno. */
export function getrlimit(resource: number): { soft: bigint; hard: bigint } | { errno: number } {
  const buf = new BigUint64Array(2);
  const [r, e] = check(libc().getrlimit(resource, ptr(buf)));
  return r < 0 ? { errno: e } : { soft: buf[0] as bigint, hard: buf[1] as bigint };
}

/** setrlimit(2); [0, 0] or [-1, errno]. */
export function setrlimit(resource: number, soft: bigint, hard: bigint): [number, number] {
  return check(libc().setrlimit(resource, ptr(new BigUint64Array([soft, hard]))));
}

// --- unix sockets with fd passing (the OCI runtime's --console-socket) ------------------------

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const MSG_DONTWAIT = 0x40;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
/** sizeof(sun_path): the longest socket path is one byte less (its NUL). */
export const SUN_PATH_MAX = 108;

/** socket(2). */
export function socket(domain: number, type: number, protocol = 0): [number, number] {
  return check(libc().socket(domain, type, protocol));
}

/** bind(2) of a unix socket to a filesystem path. */
export function bindUnix(fd: number, path: string): [number, number] {
  const name = Buffer.from(path);
  if (name.length >= SUN_PATH_MAX) return [-1, EINVAL];
  // struct sockaddr_un: sa_family_t (u16), then the path, NUL-terminated.
  const addr = new Uint8Array(2 + SUN_PATH_MAX);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(name, 2);
  return check(libc().bind(fd, ptr(addr), 2 + name.length + 1));
}

/** bind(2) to a raw sockaddr (a netlink one, for example); [0, 0] or [-1, errno]. */
export function bindRaw(fd: number, addr: Uint8Array): [number, number] {
  return check(libc().bind(fd, ptr(addr), addr.length));
}

export function listen(fd: number, backlog: number): [number, number] {
  return check(libc().listen(fd, backlog));
}

/** accept4(2) without the peer's address. */
export function accept4(fd: number, flags: number): [number, number] {
  return check(libc().accept4(fd, null, null, flags));
}

/**
 * recvmsg(2) of one message that carries one fd (SCM_RIGHTS): [fd, errno] and the message's
 * bytes. fd is -1 with errno 0 when a message came without one; EAGAIN when none is there yet.
 */
export function recvFd(sock: number, flags: number): { fd: number; errno: number; data: Uint8Array } {
  const data = new Uint8Array(4096);
  // struct iovec { void *iov_base; size_t iov_len; }
  const iov = new BigUint64Array([BigInt(ptr(data)), BigInt(data.byteLength)]);
  // CMSG_SPACE(sizeof(int)): a 16-byte cmsghdr (size_t len; int level; int type) + 4, aligned to 8.
  const control = new Uint8Array(24);
  // struct msghdr (64-bit): name, namelen(+pad), iov, iovlen, control, controllen, flags(+pad).
  const msg = new BigUint64Array(7);
  msg[2] = BigInt(ptr(iov));
  msg[3] = 1n;
  msg[4] = BigInt(ptr(control));
  msg[5] = BigInt(control.byteLength);
  const [n, err] = check(libc().recvmsg(sock, ptr(msg), flags));
  if (n < 0) return { fd: -1, errno: err, data: new Uint8Array(0) };
  const cv = new DataView(control.buffer);
  const controlLen = Number(msg[5]);
  const carriesFd = controlLen >= 20 && cv.getInt32(8, true) === SOL_SOCKET && cv.getInt32(12, true) === SCM_RIGHTS;
  return { fd: carriesFd ? cv.getInt32(16, true) : -1, errno: 0, data: data.subarray(0, n) };
}

// --- pipes -------------------------------------------------------------------------------------

/** ioctl request for the bytes waiting to be read (the same number on x86_64 and aarch64). */
const FIONREAD = 0x541b;

/** The bytes in the pipe or fifo behind `fd` that no reader has read yet; -1 on an error. */
export function unreadBytes(fd: number): number {
  const n = new Int32Array(1);
  const [r] = sys(nrs().ioctl, fd, FIONREAD, ptr(n));
  return r < 0 ? -1 : (n[0] as number);
}

// --- terminals ---------------------------------------------------------------------------------

/** ioctl request that sets a terminal's window size (the same number on x86_64 and aarch64). */
const TIOCSWINSZ = 0x5414;

/** Sets the window size of the terminal behind fd (ioctl through syscall(2): it is variadic). */
export function setWindowSize(fd: number, rows: number, cols: number): [number, number] {
  // struct winsize { unsigned short ws_row, ws_col, ws_xpixel, ws_ypixel; }
  const ws = new Uint16Array([rows & 0xffff, cols & 0xffff, 0, 0]);
  return sys(nrs().ioctl, fd, TIOCSWINSZ, ptr(ws));
}

// A pty of the daemon's own (src/linux/pty.ts): the same numbers on x86_64 and aarch64.
/** _IOW('T', 0x31, int): locks or unlocks the slave of a pty master (unlockpt(3)). */
const TIOCSPTLCK = 0x40045431;
/** _IO('T', 0x41): opens the master's slave, without a path (Linux 4.13). */
const TIOCGPTPEER = 0x5441;
/** Makes the terminal the caller's session's controlling terminal. */
const TIOCSCTTY = 0x540e;

/** Unlocks the slave of pty master `fd` (unlockpt(3)). */
export function unlockPty(fd: number): [number, number] {
  const unlock = new Int32Array([0]);
  return sys(nrs().ioctl, fd, TIOCSPTLCK, ptr(unlock));
}

/** Opens the slave of pty master `fd` with open(2) `flags`; [fd, 0] or [-1, errno]. */
export function openPtyPeer(fd: number, flags: number): [number, number] {
  return sys(nrs().ioctl, fd, TIOCGPTPEER, flags);
}

/** Makes terminal `fd` the controlling terminal of the caller's session (it must lead one that has none). */
export function setControllingTerminal(fd: number): [number, number] {
  return sys(nrs().ioctl, fd, TIOCSCTTY, 0);
}

export const O_CLOEXEC = 0o2000000;

/** pipe2(2): [[readFd, writeFd], 0] or [null, errno]. */
export function pipe2(flags = O_CLOEXEC): [[number, number], 0] | [null, number] {
  const fds = new Int32Array(2);
  const [r, e] = check(libc().pipe2(ptr(fds), flags));
  return r < 0 ? [null, e] : [[fds[0] as number, fds[1] as number], 0];
}

export const MFD_CLOEXEC = 1;

/** An anonymous in-memory file (memfd_create(2)); `name` shows in /proc/PID/fd only. */
export function memfdCreate(name: string, flags = MFD_CLOEXEC): [number, number] {
  const n = Buffer.from(`${name}\0`);
  return sys(nrs().memfd_create, Number(ptr(n)), flags);
}

// --- functions bound on their own (see the top of this file) --------------------------------

const threads = bindOnUse({
  gettid: { args: [], returns: i32 },
  sched_getaffinity: { args: [i32, u64, P], returns: i32 },
  sched_setaffinity: { args: [i32, u64, P], returns: i32 },
  __errno_location: { args: [], returns: P },
});

/** This thread's Linux id (gettid(2), in glibc since 2.30). */
export function gettid(): number {
  return threads().gettid();
}

/** Room for CPU numbers below 8192 (the kernel's largest NR_CPUS is 8192). */
const AFFINITY_BYTES = 1024;

/** The CPUs thread `tid` may run on (sched_getaffinity(2); 0: the calling thread), ascending. */
export function schedGetaffinity(tid = 0): [number[] | null, number] {
  const t = threads();
  const mask = new Uint8Array(AFFINITY_BYTES);
  if (t.sched_getaffinity(tid, AFFINITY_BYTES, ptr(mask)) < 0) return [null, errnoOf(t.__errno_location())];
  const cpus: number[] = [];
  for (let i = 0; i < AFFINITY_BYTES * 8; i++) if ((mask[i >> 3] ?? 0) & (1 << (i & 7))) cpus.push(i);
  return [cpus, 0];
}

/** Confines thread `tid` (0: the calling thread) to `cpus` (sched_setaffinity(2)); [0, 0] or [-1, errno]. */
export function schedSetaffinity(tid: number, cpus: readonly number[]): [number, number] {
  const t = threads();
  const mask = new Uint8Array(AFFINITY_BYTES);
  for (const c of cpus) if (c >= 0 && c < AFFINITY_BYTES * 8) mask[c >> 3] = (mask[c >> 3] ?? 0) | (1 << (c & 7));
  return t.sched_setaffinity(tid, AFFINITY_BYTES, ptr(mask)) < 0 ? [-1, errnoOf(t.__errno_location())] : [0, 0];
}

// --- a run thread's own CPU (the shared-mode daemon's CPU quota, engines/wasmtime/cpu-throttle.ts) ---

const cpuTime = bindOnUse({
  clock_gettime: { args: [i32, P], returns: i32 },
  setpriority: { args: [i32, u32, i32], returns: i32 },
});
const CLOCK_THREAD_CPUTIME_ID = 3;
const PRIO_PROCESS = 0;
const timespec = new BigInt64Array(2);

/** CPU time of the calling thread in nanoseconds (clock_gettime(CLOCK_THREAD_CPUTIME_ID), a vDSO call). */
export function threadCpuNs(): number {
  if (cpuTime().clock_gettime(CLOCK_THREAD_CPUTIME_ID, ptr(timespec)) !== 0) return 0;
  return Number(timespec[0]) * 1e9 + Number(timespec[1]);
}

/** Sets the calling thread's nice value (setpriority(2) on thread id 0: this thread on Linux); false if refused. */
export function setThreadNice(nice: number): boolean {
  return cpuTime().setpriority(PRIO_PROCESS, 0, nice) === 0;
}

const exec = bindOnUse({
  execve: { args: [P, P, P], returns: i32 },
  __errno_location: { args: [], returns: P },
});

/**
 * execve(2) of `path` with `argv` and `envp`, each item a NUL-terminated string in the encoding
 * the new program reads. Returns only when it failed: with the errno.
 */
export function execve(path: string, argv: Uint8Array[], envp: Uint8Array[]): number {
  const array = (items: Uint8Array[]): BigUint64Array => {
    const a = new BigUint64Array(items.length + 1); // NULL-terminated
    items.forEach((s, i) => {
      a[i] = BigInt(ptr(s));
    });
    return a;
  };
  const c = exec();
  const file = cstr(path);
  const a = array(argv);
  const e = array(envp);
  c.execve(ptr(file), ptr(a), ptr(e));
  return errnoOf(c.__errno_location()) || -1;
}

const trim = bindOnUse({ malloc_trim: { args: [u64], returns: i32 } });
let noTrim = false;

/** glibc's malloc_trim(3): returns free memory of every arena to the kernel. False if this libc has none (musl). */
export function mallocTrim(): boolean {
  if (noTrim) return false;
  try {
    trim().malloc_trim(0);
    return true;
  } catch {
    noTrim = true; // no such symbol: nothing to trim, and no point asking again
    return false;
  }
}

// --- idmapped mounts, a thread's groups and capabilities (the shared-mode daemon, linux/idmap.ts)

/**
 * The new mount API's numbers are the same on every architecture (allocated after the tables
 * were unified, Linux 5.2 and 5.12); the credential calls' are not, so they have a table here.
 */
const MOUNT_API = { open_tree: 428, move_mount: 429, mount_setattr: 442 } as const;
const CREDS: Record<string, { setgroups: number; capget: number; capset: number }> = {
  x64: { setgroups: 116, capget: 125, capset: 126 },
  arm64: { setgroups: 159, capget: 90, capset: 91 },
};

/** This architecture's numbers of the calls above (refused with the usual message elsewhere). */
function creds(): { setgroups: number; capget: number; capset: number } {
  const c = CREDS[process.arch];
  if (!c) syscallTable();
  return c as NonNullable<typeof c>;
}

const mountApi = bindOnUse({
  // glibc's syscall(), six arguments: mount_setattr takes five.
  syscall: { args: [i64, i64, i64, i64, i64, i64], returns: i64 },
  __errno_location: { args: [], returns: P },
});

function sys6(nr: number, a = 0, b = 0, c2 = 0, d = 0, e = 0): [number, number] {
  const m = mountApi();
  const n = Number(m.syscall(nr, a, b, c2, d, e));
  return n < 0 ? [-1, errnoOf(m.__errno_location())] : [n, 0];
}

export const MNT_DETACH = 0x2;
export const AT_FDCWD = -100;
export const AT_EMPTY_PATH = 0x1000;
export const AT_RECURSIVE = 0x8000;
export const OPEN_TREE_CLONE = 1;
export const MOVE_MOUNT_F_EMPTY_PATH = 0x4;
export const MOUNT_ATTR_IDMAP = 0x100000;
export const MS_PRIVATE = 1 << 18;

/** open_tree(2) of `path` (relative to AT_FDCWD); [fd, 0] or [-1, errno]. */
export function openTree(path: string, flags: number): [number, number] {
  const p = cstr(path);
  const r = sys6(MOUNT_API.open_tree, AT_FDCWD, Number(ptr(p)), flags);
  keepAlive(p);
  return r;
}

/**
 * mount_setattr(2) on the mount tree `fd` (AT_EMPTY_PATH), with struct mount_attr {attr_set,
 * attr_clr, propagation, userns_fd} (MOUNT_ATTR_SIZE_VER0, 32 bytes); [0, 0] or [-1, errno].
 */
export function mountSetattr(
  fd: number,
  flags: number,
  attr: { set: number; clear?: number; propagation?: number; usernsFd?: number },
): [number, number] {
  const a = new BigUint64Array([BigInt(attr.set), BigInt(attr.clear ?? 0), BigInt(attr.propagation ?? 0), BigInt(attr.usernsFd ?? 0)]);
  const empty = cstr("");
  const r = sys6(MOUNT_API.mount_setattr, fd, Number(ptr(empty)), flags | AT_EMPTY_PATH, Number(ptr(a)), a.byteLength);
  keepAlive(empty, a);
  return r;
}

/** move_mount(2) of the detached tree `fd` onto `target`; [0, 0] or [-1, errno]. */
export function moveMount(fd: number, target: string): [number, number] {
  const empty = cstr("");
  const to = cstr(target);
  const r = sys6(MOUNT_API.move_mount, fd, Number(ptr(empty)), AT_FDCWD, Number(ptr(to)), MOVE_MOUNT_F_EMPTY_PATH);
  keepAlive(empty, to);
  return r;
}

/**
 * setgroups(2) of the calling thread only (the raw system call: glibc's wrapper changes every
 * thread of the process); threads it starts afterwards inherit the list. [0, 0] or [-1, errno].
 */
export function setgroupsThisThread(gids: number[]): [number, number] {
  const list = new Uint32Array(Math.max(gids.length, 1));
  list.set(gids);
  const r = sys6(creds().setgroups, gids.length, Number(ptr(list)));
  keepAlive(list);
  return r;
}

/** The capabilities that override a file's permissions: CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID. */
export const FILE_CAPABILITIES = [0, 1, 2, 3, 4] as const;

/**
 * The calling thread gives up `caps` (capability numbers below 32), effective and permitted,
 * for good (capget/capset of this thread only, _LINUX_CAPABILITY_VERSION_3); threads it starts
 * afterwards inherit the result. [0, 0] or [-1, errno].
 */
export function dropCapabilitiesThisThread(caps: readonly number[]): [number, number] {
  const c = creds();
  // struct __user_cap_header_struct {u32 version; int pid} (pid 0: this thread) and two
  // struct __user_cap_data_struct {u32 effective, permitted, inheritable} (capabilities 0-31, 32-63).
  const header = new Uint32Array([0x20080522, 0]);
  const data = new Uint32Array(6);
  let r = sys6(c.capget, Number(ptr(header)), Number(ptr(data)));
  if (r[0] === 0) {
    const mask = ~caps.reduce((m, cap) => m | (1 << cap), 0) >>> 0;
    data[0] = (data[0] as number) & mask;
    data[1] = (data[1] as number) & mask;
    r = sys6(c.capset, Number(ptr(header)), Number(ptr(data)));
  }
  keepAlive(header, data);
  return r;
}

/** Holds buffers whose addresses a call was given as numbers until the call has returned. */
function keepAlive(..._buffers: unknown[]): void {}

// --- advisory locks (the shared-mode daemon: one per socket directory, src/daemon/lock.ts) -----

const locks = bindOnUse({ flock: { args: [i32, i32], returns: i32 } });

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;
/** What flock(2) with LOCK_NB answers when another open file holds the lock (EAGAIN on Linux). */
export const EWOULDBLOCK = EAGAIN;

/** flock(2); [0, 0] or [-1, errno]. The lock belongs to the open file and ends with its last fd. */
export function flock(fd: number, operation: number): [number, number] {
  return check(locks().flock(fd, operation));
}
