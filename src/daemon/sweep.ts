// What a dead daemon of this socket directory left of its containers, cleaned up by the next
// one when it starts (docs/ARCHITECTURE.md, "What a crash costs"). After a crash containerd
// runs the thin shim's `delete` for every container at once and gives each 5 s; those it
// kills meanwhile leave their work dir, the module's view and the rootfs mounted, and a native
// container's process running. Nothing else would ever clean them up.
//
// Which containers were a daemon's: each work dir it makes holds OWNER_FILE, naming the
// daemon (its socket directory, pid and start time) and the container's bundle. A work dir is
// swept only when its owner is of this directory and no longer runs: never a live daemon's
// (one draining beside this one after a hand-over, ./generations.ts), never another
// directory's daemon's, never a normal-mode shim's (its work dirs carry no such file). The
// clean-up is the thin shim's own (../runtime-v2/delete.ts): runc's container, the rootfs and
// view unmounts, the work dir; idempotent, so a `delete` containerd runs at the same moment
// for the same container does no harm.

import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { cleanUpLeftovers } from "../runtime-v2/delete.ts";
import { containerStateDir } from "../runtime-v2/paths.ts";
import type { Logger } from "../task/task-host.ts";
import { processStart } from "./daemon-files.ts";

/** In a work dir: which daemon made it, and the container's bundle. */
export const OWNER_FILE = "daemon.json";

/** A daemon, for good: a pid alone may later be another process's. */
export interface DaemonId {
  /** Its socket directory (absolute). */
  dir: string;
  pid: number;
  /** processStart(pid) while it ran. */
  started: string;
}

interface Owner extends DaemonId {
  bundle: string;
}

/** This process, as the daemon of `socket`. */
export function thisDaemon(socket: string): DaemonId {
  const started = processStart(process.pid);
  if (started === undefined) throw new Error("cannot read /proc/self/stat: a crash of this daemon could not be cleaned up after");
  return { dir: dirname(resolve(socket)), pid: process.pid, started };
}

/** Marks a container's work dir as `daemon`'s (TaskHost.workDirMade), before anything is mounted for it. */
export function markWorkDir(daemon: DaemonId, c: { bundle: string; workDir: string }): void {
  const owner: Owner = { ...daemon, bundle: c.bundle };
  writeFileSync(join(c.workDir, OWNER_FILE), JSON.stringify(owner), { mode: 0o600 });
}

/** The owner of a work dir, if one of ours made it. */
function ownerOf(workDir: string): Owner | undefined {
  let o: Partial<Owner>;
  try {
    o = JSON.parse(readFileSync(join(workDir, OWNER_FILE), "utf8"));
  } catch {
    return undefined;
  }
  const ok = typeof o.dir === "string" && Number.isSafeInteger(o.pid) && typeof o.started === "string" && typeof o.bundle === "string";
  return ok ? (o as Owner) : undefined;
}

const lives = (d: DaemonId): boolean => processStart(d.pid) === d.started;

/**
 * Cleans up every container of `stateRoot` whose work dir a dead daemon of `self`'s directory
 * made. Resolves with how many it found, and how many of them could not be cleaned up whole
 * (each failure logged; such a work dir is kept, and the next start tries again).
 */
export async function sweepDeadDaemons(self: DaemonId, stateRoot: string, log: Logger): Promise<{ found: number; failed: number }> {
  const found: { namespace: string; id: string; bundle: string }[] = [];
  const root = dirname(containerStateDir("_", stateRoot));
  for (const namespace of list(root)) {
    for (const id of list(join(root, namespace))) {
      const owner = ownerOf(join(root, namespace, id));
      if (!owner || owner.dir !== self.dir || owner.pid === self.pid || lives(owner)) continue;
      found.push({ namespace, id, bundle: owner.bundle });
    }
  }
  let failed = 0;
  for (const c of found) {
    let failures = 0;
    await cleanUpLeftovers(c, stateRoot, (m) => {
      failures++;
      log(`cleaning up ${c.namespace}/${c.id} of a dead daemon: ${m}`, "warning");
    });
    if (failures > 0) failed++;
  }
  return { found: found.length, failed };
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
