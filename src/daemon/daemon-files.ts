// The files by which the daemons of one socket directory name themselves, and whether the
// daemon a file names still lives. Every daemon serves its manager at <dir>/daemons/<pid>.sock
// and names its sandbox sockets <hash>.<pid>.sock (./generations.ts). Nothing here loads
// ttrpc: the thin shim's `delete` reads these before it decides whether to load a client at
// all (after a crash containerd runs one `delete` per container, all at once).

import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";

/** <dir>/daemons: each daemon's own manager socket, <pid>.sock. */
export const daemonsDir = (socket: string): string => join(dirname(socket), "daemons");

/** The pid a file of ours names: <pid>.sock, or <hash>.<pid>.sock. */
export function pidOf(name: string): number | undefined {
  const m = /(?:^|\.)([1-9][0-9]*)\.sock$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** Whether a process of that pid exists (EPERM: it does, someone else's). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === "EPERM";
  }
}

/**
 * When process `pid` started (field 22 of /proc/<pid>/stat, in clock ticks since boot);
 * undefined when there is no such process, or it has exited (a zombie, not yet reaped). A pid
 * with its start time names one process for good: a pid alone may meanwhile be another's.
 */
export function processStart(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  } catch {
    return undefined;
  }
  // The name (field 2) is in parentheses and may hold spaces and ")": fields 3… follow the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[0] === "Z" ? undefined : fields[19];
}

/** The live daemons of the socket directory (their pids, from daemons/), except `except`. */
export function liveDaemons(socket: string, except?: number): number[] {
  let names: string[];
  try {
    names = readdirSync(daemonsDir(socket));
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const n of names) {
    const pid = pidOf(n);
    if (pid !== undefined && pid !== except && alive(pid)) out.push(pid);
  }
  return out;
}

/**
 * Whether no daemon of the socket's directory can be serving: its daemons/ directory exists
 * and names no live process (they all died: a crash). Without daemons/ (no daemon ever
 * started there, or one from before hand-overs), it cannot tell: false, and the caller asks.
 */
export function noDaemonLives(socket: string): boolean {
  try {
    readdirSync(daemonsDir(socket));
  } catch {
    return false;
  }
  return liveDaemons(socket).length === 0;
}
