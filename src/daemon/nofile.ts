// The daemon's open-file limit. Every wasm container holds about a dozen fds in the daemon
// (its three stdio copies, the stdin relay's fifo end and the stream on containerd's side,
// the sandbox's socket and connections, the files the module's WASI context keeps open:
// 12019 fds with 1000 idle containers, bench/shim/run.ts), so the usual soft limit of 1024
// would stop it near 80 containers. At start the daemon raises its soft limit to the hard
// one (what a process may do unprivileged) and warns when that still holds fewer than
// WARN_BELOW_CONTAINERS containers; the systemd unit sets the hard limit
// (scripts/systemd/containerd-wasmtimed.service, LimitNOFILE).

import { getrlimit, RLIM_INFINITY, RLIMIT_NOFILE, setrlimit, strerror } from "../linux/libc.ts";
import type { Logger } from "../task/task-host.ts";

/** Open files one wasm container costs the daemon (measured: 12019 fds for 1000 containers). */
export const FDS_PER_CONTAINER = 12;
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
