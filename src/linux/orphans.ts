// The orphan sweep: zombies that are our children (we are the subreaper, ./subreaper.ts) and
// that nobody else will wait for, such as the processes a container leaves behind when its
// init exits. Each is reaped by its own pid, never by a wait on any child: Bun waits for the
// children it spawned, and ExitWatcher for the pids it watches, and neither must lose a status
// to us. Statuses are kept for a minute, for a watch that comes late.

import { decodeSiginfo, ECHILD, P_ALL, P_PID, SIGINFO_SIZE, shellStatus, WEXITED, WNOHANG, WNOWAIT, waitid } from "./libc.ts";
import { listChildren, pidfdHeldPids, readStat } from "./proc.ts";

export interface ReapedOrphan {
  pid: number;
  status: number;
  exitedAt: Date;
}

const REAPED_TTL_MS = 60_000;
const recentlyReaped = new Map<number, ReapedOrphan & { at: number }>();

function rememberReaped(o: ReapedOrphan): void {
  const now = Date.now();
  for (const [pid, r] of recentlyReaped) if (now - r.at > REAPED_TTL_MS) recentlyReaped.delete(pid);
  recentlyReaped.set(o.pid, { ...o, at: now });
}

/** Status of a pid that reapOrphans reaped in the last minute (consumed on read). */
export function takeReaped(pid: number): ReapedOrphan | undefined {
  const r = recentlyReaped.get(pid);
  if (!r) return undefined;
  recentlyReaped.delete(pid);
  if (Date.now() - r.at > REAPED_TTL_MS) return undefined;
  return { pid: r.pid, status: r.status, exitedAt: r.exitedAt };
}

const orphanInfo = new Uint8Array(SIGINFO_SIZE);

/** Whether some child of ours is a zombie: waitid(P_ALL) with WNOWAIT looks and reaps nothing. */
function anyZombieChild(): boolean {
  const [r, e] = waitid(P_ALL, 0, orphanInfo, WEXITED | WNOHANG | WNOWAIT);
  if (r < 0) return e !== ECHILD; // ECHILD: no children at all; any other failure: look anyway
  return decodeSiginfo(orphanInfo).pid !== 0;
}

/**
 * Reaps our zombie children that nobody else will wait for: children in state Z for which
 * `isOurs(pid)` is false and to which this process holds no pidfd (Bun holds one for each
 * child it spawned until it reaps it; ExitWatcher holds one per watched pid). Each is reaped
 * with waitid(P_PID, pid, WEXITED|WNOHANG), never a wait on any child. Returns what it reaped;
 * statuses are kept for a minute for a late watch(pid).
 */
export function reapOrphans(isOurs: (pid: number) => boolean = () => false): ReapedOrphan[] {
  // The sweep runs every few seconds for the server's whole life: one syscall when no child
  // is a zombie, instead of reading /proc (whose strings an idle server then keeps until its
  // next collection).
  if (!anyZombieChild()) return [];
  const me = process.pid;
  const zombies = listChildren().filter((pid) => {
    const st = readStat(pid);
    return st !== undefined && st.state === "Z" && st.ppid === me && !isOurs(pid);
  });
  if (!zombies.length) return [];
  const held = pidfdHeldPids();
  const out: ReapedOrphan[] = [];
  for (const pid of zombies) {
    if (held.has(pid)) continue;
    const [r] = waitid(P_PID, pid, orphanInfo, WEXITED | WNOHANG);
    if (r < 0) continue;
    const ci = decodeSiginfo(orphanInfo);
    if (ci.pid !== pid) continue;
    const o = { pid, status: shellStatus(ci), exitedAt: new Date() };
    rememberReaped(o);
    out.push(o);
  }
  return out;
}
