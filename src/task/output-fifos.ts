// Our own hold on a process's output fifos, from its Create or Exec until its exit has been
// reported, so that the exit is reported only once containerd has read what the process left
// in them. Why: containerd before 1.6.22 and 1.7.3 (Debian's 1.6.20 among them) closes its
// read ends of a task's fifos in task.Delete without waiting for its copy to finish
// (containerd#8643 fixed that), and CRI deletes a task as soon as it sees the exit (the
// TaskExit event, or the Wait answer). What was still in the fifo then was lost: the tail of
// the container's log and of its attach (measured: 330 KB piped through `crictl attach` into a
// module that echoes it, 2 to 35 KB missing in 3 runs of 8 on 1.6.20 in shared mode; 1 run of
// 12 in normal mode). Every mode reports exits through the task layer, so the wait is here,
// once: the process's own copies of the fifos may be gone (runc's child holds them, and the
// server closed its own after Create), so the task keeps one of its own to ask.
//
// Only FIFOs and pipes are held (a binary:// logging program's pipe is one; a file:// log,
// /dev/null have nobody to wait for), each one once (stdout and stderr may be the same fifo).
// Nothing is ever read from a held fd: a second reader would take bytes meant for containerd.
// It is opened write-only (FIONREAD answers on either end of a pipe): it holds no reader of
// ours on the fifo, and is closed right after the exit is reported, where containerd's client
// (1.6.22 on) waits for the output's EOF before its Delete. Synchronous calls only (docs/ARCHITECTURE.md, "Bun's thread pool").

import { closeSync, constants, fstatSync, openSync } from "node:fs";
import { unreadBytes } from "../linux/libc.ts";

/**
 * How long the exit waits while nobody reads more of what is left: a reader that has stopped
 * (a client gone, containerd restarting) must not hold the exit. Liveness, not a measure.
 */
export const OUTPUT_STALL_MS = 100;
/** How often the wait looks: nothing wakes us when a reader has taken bytes from a pipe. */
export const OUTPUT_POLL_MS = 2;
/**
 * The longest the exit waits in all: a writer that outlives the process (a child that kept the
 * fifo) and a reader that keeps up would otherwise hold the exit for ever.
 */
export const OUTPUT_WAIT_MAX_MS = 2000;

/** What the wait is told to use; tests give their own sleep (the reader's turn) and bounds. */
export interface OutputWaitOptions {
  sleep?: (ms: number) => Promise<void>;
  stallMs?: number;
  pollMs?: number;
  maxMs?: number;
  /** Said once when the exit has to wait, with the bytes left. */
  onWait?: (unread: number) => void;
}

export class OutputFifos {
  private constructor(private fds: number[]) {}

  /** Holds nothing (a terminal process: its output is the pty's, copied by us). */
  static none(): OutputFifos {
    return new OutputFifos([]);
  }

  /**
   * Opens a copy of each of `fds` (the process's stdout and stderr as the task opened them)
   * that is a FIFO or a pipe, one per pipe. Throws (holding nothing) if one cannot be opened.
   */
  static hold(fds: readonly number[]): OutputFifos {
    const held: number[] = [];
    const seen = new Set<string>();
    try {
      for (const fd of fds) {
        if (fd < 0) continue;
        const st = fstatSync(fd);
        if (!st.isFIFO()) continue;
        const key = `${st.dev}:${st.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
        held.push(openCopy(fd));
      }
    } catch (e) {
      closeQuietly(held);
      throw e;
    }
    return new OutputFifos(held);
  }

  /** How many fds it holds (0 once closed). */
  get size(): number {
    return this.fds.length;
  }

  /** Bytes written and not yet read, in every held fifo (or in those of `fds`). */
  unread(fds: readonly number[] = this.fds): number {
    let n = 0;
    for (const fd of fds) n += Math.max(0, unreadBytes(fd));
    return n;
  }

  /**
   * Resolves once nothing is left unread in the held fifos that have a reader, or nobody has
   * read any of it for `stallMs` (counted in looks, `pollMs` apart), or after `maxMs` in all.
   * Never rejects.
   */
  async read(o: OutputWaitOptions = {}): Promise<void> {
    const sleep = o.sleep ?? Bun.sleep;
    const pollMs = o.pollMs ?? OUTPUT_POLL_MS;
    const stallMs = o.stallMs ?? OUTPUT_STALL_MS;
    const maxMs = o.maxMs ?? OUTPUT_WAIT_MAX_MS;
    // Only a fifo someone has open for reading can be emptied (`ctr run -d` leaves none): the
    // process's own fds are gone, so what reads now is containerd's (or a child that outlived it).
    const left = this.fds.filter((fd) => unreadBytes(fd) > 0 && hasReader(fd));
    // Progress is a backlog lower than any seen: bytes a writer adds meanwhile are not.
    let least = Number.POSITIVE_INFINITY;
    let still = 0;
    for (let waited = 0; ; waited += pollMs) {
      // Closed meanwhile (Delete): the fd numbers may be anything's now.
      if (this.fds.length === 0) return;
      const unread = this.unread(left);
      if (unread === 0) return;
      if (least === Number.POSITIVE_INFINITY) o.onWait?.(unread);
      if (unread < least) {
        least = unread;
        still = 0;
      } else if ((still += pollMs) >= stallMs) return;
      if (waited >= maxMs) return;
      await sleep(pollMs);
    }
  }

  /** Lets go of the fifos; again is a no-op. */
  close(): void {
    const fds = this.fds;
    this.fds = [];
    closeQuietly(fds);
  }
}

/**
 * A new open file description of the pipe behind `fd`, through /proc (as the daemon makes its
 * own copies): write-only and non-blocking, which opens at once while the fifo has a reader
 * (the task's own read-write fd is one while it is open). Without one (a binary:// logging
 * program gone: ENXIO) read-write, which never blocks either.
 */
function openCopy(fd: number): number {
  const path = `/proc/self/fd/${fd}`;
  try {
    return openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENXIO") throw e;
    return openSync(path, constants.O_RDWR);
  }
}

/** Whether the pipe behind `fd` has a reader: a write-only, non-blocking open fails (ENXIO) without one. */
function hasReader(fd: number): boolean {
  try {
    closeSync(openSync(`/proc/self/fd/${fd}`, constants.O_WRONLY | constants.O_NONBLOCK));
    return true;
  } catch (e) {
    // Anything else (out of fds): wait as if it had one, the stall bounds it.
    return (e as NodeJS.ErrnoException).code !== "ENXIO";
  }
}

function closeQuietly(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {}
  }
}
