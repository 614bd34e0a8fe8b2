// The daemon's open-file limit. Every wasm container of `ctr run -d` holds 18 fds in the
// daemon (counted in /proc/<daemon>/fd before and after one, containerd 1.6 and 2.4.2, the
// demo app asleep on a run pool; 16 before the task's hold on its output, 18.25 a container
// over 8 on 1.6): the sandbox's listening socket and containerd's connection
// to it; containerd's three stdio fifos, opened twice (the instance's copies and the run's);
// its two output fifos once more, the task's hold until the exit is reported
// (../task/output-fifos.ts);
// the stdin relay's fifo, both ends; the module's root directory (its WASI preopen); the module
// file and the compiled artifact, kept open for a fallback compile and by the checked cache
// entry; the artifact's mapping, which wasmtime keeps its file open for; the run's eventfd and
// epoll. The events connection to containerd is one for all sandboxes (../task/events.ts,
// EventsConnections). So the usual soft limit of 1024 would stop it near 60 containers. At
// start the daemon raises its soft limit to the hard one (what a process may do unprivileged)
// and warns when that still holds fewer than WARN_BELOW_CONTAINERS containers; the systemd unit sets the hard limit
// (scripts/systemd/containerd-wasmtimed.service, LimitNOFILE). Where the hard limit is lower
// than the containers need, new pods overflow into a successor daemon (./overflow.ts).

import { getrlimit, RLIM_INFINITY, RLIMIT_NOFILE, setrlimit, strerror } from "../linux/libc.ts";
import type { Logger } from "../task/task-host.ts";

/** Open files one wasm container costs the daemon (measured, see above). */
export const FDS_PER_CONTAINER = 18;
/** Below room for this many containers, the daemon warns at start. */
export const WARN_BELOW_CONTAINERS = 1000;

/** How many containers a soft limit of `soft` open files leaves room for. */
export function containersFor(soft: bigint): number {
  return soft === RLIM_INFINITY ? Number.POSITIVE_INFINITY : Math.floor(Number(soft) / FDS_PER_CONTAINER);
}

/**
 * Raises the soft RLIMIT_NOFILE to the hard one and logs what it allows; a warning (naming
 * LimitNOFILE) when that is room for fewer than WARN_BELOW_CONTAINERS containers.
 * Returns the soft limit in force afterwards (undefined if it cannot be read).
 */
export function raiseNofile(log: Logger): bigint | undefined {
  const before = getrlimit(RLIMIT_NOFILE);
  if ("errno" in before) {
    log(`reading the open-file limit: ${strerror(before.errno)}`, "warning");
    return undefined;
  }
  let soft = before.soft;
  if (soft < before.hard) {
    const [r, e] = setrlimit(RLIMIT_NOFILE, before.hard, before.hard);
    if (r === 0) soft = before.hard;
    else log(`raising the open-file limit from ${before.soft} to ${before.hard}: ${strerror(e)}`, "warning");
  }
  const room = containersFor(soft);
  if (room < WARN_BELOW_CONTAINERS) {
    log(
      `open-file limit ${soft} (hard ${before.hard}) leaves room for about ${room} wasm containers ` +
        `(~${FDS_PER_CONTAINER} fds each); raise it (systemd: LimitNOFILE= in containerd-wasmtimed.service, or ulimit -n)`,
      "warning",
    );
  } else log(`open-file limit ${soft === RLIM_INFINITY ? "unlimited" : soft}: room for about ${room} wasm containers`, "debug");
  return soft;
}
