// A pty made by this process, for a terminal process that runs in it (the shared-mode daemon's
// wasm containers and execs with terminal=true): what runc does for a container's process
// (a pty whose master goes to the console socket, the slave as the process's stdio), done here.
// The master goes to the Task service, which copies it to containerd's fifos (src/task/terminal.ts);
// the slave is the module's terminal (src/daemon/inproc-runtime.ts says how).
//
// One danger is the daemon's own: a session leader with no controlling terminal that opens a
// terminal without O_NOCTTY gets it as its controlling terminal, and then a ^C typed into
// `ctr run -t` is SIGINT to the daemon's process group, a hangup SIGHUP to the daemon. We open
// with O_NOCTTY, but the engine reopens the slave through /proc/self/fd/N for the module's stdio
// (wasmtime's C API takes paths) without it. So a daemon that leads a session (systemd starts
// every service with setsid) first gives that session a terminal of its own that nobody writes
// to (holdSessionTerminal): a session has one controlling terminal, so no other is taken.

import { closeSync, constants, openSync, readFileSync } from "node:fs";
import { O_CLOEXEC, openPtyPeer, setControllingTerminal, strerror, unlockPty } from "./libc.ts";

const FLAGS = constants.O_RDWR | constants.O_NOCTTY | O_CLOEXEC;

export interface Pty {
  /** The master: the terminal's other end (the Task service copies it to containerd's fifos). */
  master: number;
  /** The slave: the process's stdin, stdout and stderr. */
  slave: number;
}

/** A new pty pair (both fds close-on-exec, neither anyone's controlling terminal). */
export function openPty(): Pty {
  holdSessionTerminal();
  const master = openSync("/dev/ptmx", FLAGS);
  try {
    const [u, ue] = unlockPty(master);
    if (u < 0) throw new Error(`pty: unlock: ${strerror(ue)}`);
    const [slave, se] = openPtyPeer(master, FLAGS);
    if (slave < 0) throw new Error(`pty: open the slave: ${strerror(se)}`);
    return { master, slave };
  } catch (e) {
    closeSync(master);
    throw e;
  }
}

/** The session's own terminal, once taken (held for the life of the process). */
let sessionTerminal: Pty | null | undefined;

/**
 * If this process leads a session that has no controlling terminal, makes a pty of its own that
 * session's controlling terminal, held until the process ends: no pty of a container can become
 * it then. Once per process.
 */
export function holdSessionTerminal(): void {
  if (sessionTerminal !== undefined) return;
  sessionTerminal = null;
  // /proc/self/stat after the command: state, ppid, pgrp, session, tty_nr, ...
  const stat = readFileSync("/proc/self/stat", "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const session = Number(f[3]);
  const ttyNr = Number(f[4]);
  if (session !== process.pid || ttyNr !== 0) return;
  const master = openSync("/dev/ptmx", FLAGS);
  let slave = -1;
  try {
    const [u, ue] = unlockPty(master);
    if (u < 0) throw new Error(`unlock: ${strerror(ue)}`);
    const [s, se] = openPtyPeer(master, FLAGS);
    if (s < 0) throw new Error(`open the slave: ${strerror(se)}`);
    slave = s;
    const [c, ce] = setControllingTerminal(slave);
    if (c < 0) throw new Error(`TIOCSCTTY: ${strerror(ce)}`);
    sessionTerminal = { master, slave };
  } catch (e) {
    if (slave >= 0) closeSync(slave);
    closeSync(master);
    sessionTerminal = undefined;
    throw new Error(`pty: the daemon's session terminal: ${(e as Error).message}`);
  }
}
