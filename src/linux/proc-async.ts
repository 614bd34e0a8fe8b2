// ./proc.ts's reads for ExitWatcher.watch(), with asynchronous I/O: for the shared-mode
// daemon, whose fd table (every pod's sockets, fifos and pidfds) is long enough that reading
// it on the main thread at every Create would hold every pod's calls up. Asynchronous reads
// start Bun's thread pool, which the daemon keeps anyway; a shim server uses the synchronous
// ones (docs/ARCHITECTURE.md, "Bun's thread pool"), and nothing it loads imports this file.

import { readdir, readFile, readlink } from "node:fs/promises";
import { PIDFD_LINK, pidOfFdinfo, ppidOf, type WatchReads } from "./proc.ts";

/** Pids referenced by the pidfds this process holds, leaving out our own pidfd `except`. */
export async function pidfdHeldPidsAsync(except = -1): Promise<Set<number>> {
  const out = new Set<number>();
  let fds: string[];
  try {
    fds = await readdir("/proc/self/fd");
  } catch {
    return out; // no /proc: nothing is known to be held, as with the synchronous scan
  }
  await Promise.all(
    fds.map(async (fd) => {
      if (Number(fd) === except) return;
      try {
        if ((await readlink(`/proc/self/fd/${fd}`)) !== PIDFD_LINK) return;
        const pid = pidOfFdinfo(await readFile(`/proc/self/fdinfo/${fd}`, "utf8"));
        if (pid !== undefined) out.add(pid);
      } catch {} // closed while we looked (readdir's own fd, a finished spawn): not held
    }),
  );
  return out;
}

/** The parent pid of a process (0 when it is gone). */
export async function parentOfAsync(pid: number): Promise<number> {
  try {
    return ppidOf(await readFile(`/proc/${pid}/status`, "utf8"));
  } catch {
    return 0; // gone: already reaped by someone else; the poll reports it
  }
}

export const asyncWatchReads: WatchReads = { pidfdHeldPids: pidfdHeldPidsAsync, parentOf: parentOfAsync };
