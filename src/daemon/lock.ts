// One daemon per socket directory. A daemon owns its socket and the sandboxes directory beside
// it (<dir of socket>/sandboxes/, emptied at start); a second daemon started there would take
// the socket over and empty that directory under the first one's live sandboxes. So before it
// touches anything, a daemon takes an exclusive flock on <dir of socket>/daemon.lock and holds
// it for its life. The lock is per directory, not per socket path, because the sandboxes
// directory is: two daemons on two sockets of one directory would clobber each other too.
//
// flock, not a pid file: the lock belongs to the open file and ends with it, so a daemon killed
// with SIGKILL leaves it free and a restarted one starts without cleanup. The fd is O_CLOEXEC:
// runc and the containers it starts must not inherit it (a container outliving the daemon
// would otherwise keep the next daemon out). The file says who holds it (pid, socket), only to
// name them in the error; the lock, not the content, decides.

import { closeSync, constants, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { EWOULDBLOCK, flock, LOCK_EX, LOCK_NB, O_CLOEXEC, strerror } from "../linux/libc.ts";

/** The lock file of the daemon whose socket is `socket`: beside it. */
export function daemonLockPath(socket: string): string {
  return join(dirname(socket), "daemon.lock");
}

/** Who holds a lock, as the holder wrote it (null fields: the file does not say, or not yet). */
export interface LockHolder {
  pid: number | null;
  socket: string | null;
}

/** Another daemon holds the lock of this socket's directory. */
export class DaemonLocked extends Error {
  constructor(
    readonly socket: string,
    readonly lockPath: string,
    readonly holder: LockHolder,
  ) {
    const who = holder.pid === null ? "another daemon" : `another daemon (pid ${holder.pid})`;
    const what =
      holder.socket === null || holder.socket === socket
        ? `${who} already serves ${socket}`
        : `${who} serving ${holder.socket} owns ${dirname(socket)} and its sandboxes; one daemon per directory`;
    super(`${what} (it holds the lock ${lockPath}); nothing was changed: stop that daemon first, or use another directory`);
    this.name = "DaemonLocked";
  }
}

/**
 * Takes the lock of the socket's directory for this process's life and returns its fd (never
 * closed: the lock ends with the process). Throws DaemonLocked when another daemon holds it,
 * before anything of that daemon's (socket, sandboxes) is touched.
 */
export function lockDaemonDir(socket: string, pid: number = process.pid): number {
  const path = daemonLockPath(socket);
  // The directory a fresh /run lacks; 0711 as the sandboxes directory beside it.
  mkdirSync(dirname(path), { recursive: true, mode: 0o711 });
  // 0600: whoever can open the file can flock it, and a shared lock would keep the daemon out.
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | O_CLOEXEC, 0o600);
  const [r, err] = flock(fd, LOCK_EX | LOCK_NB);
  if (r < 0) {
    closeSync(fd);
    if (err === EWOULDBLOCK) throw new DaemonLocked(socket, path, readHolder(path));
    throw new Error(`cannot lock ${path}: ${strerror(err)}`);
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${pid} ${socket}\n`, 0);
  return fd;
}

/** The holder as its lock file says: "<pid> <socket>\n". */
export function readHolder(path: string): LockHolder {
  let s: string;
  try {
    s = readFileSync(path, "utf8");
  } catch {
    return { pid: null, socket: null };
  }
  const m = /^([1-9][0-9]*) (.+)\n$/.exec(s);
  return m ? { pid: Number(m[1]), socket: m[2] as string } : { pid: null, socket: null };
}
