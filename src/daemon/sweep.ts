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

import { readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { cleanUpLeftovers, type LeftContainer } from "../runtime-v2/delete.ts";
import { containerStateDir, removerOf, WORK_DIR_OWNER_FILE } from "../runtime-v2/paths.ts";
import type { Logger } from "../task/task-host.ts";
import { makeWorkDir } from "../task/work-dir.ts";
import { alive, processStart } from "./daemon-files.ts";

/** In a work dir: which daemon made it, and the container's bundle. */
const OWNER_FILE = WORK_DIR_OWNER_FILE;

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

/** Makes a container's work dir marked as `daemon`'s (TaskHost.claimWorkDir), before anything is mounted for it. */
export function markWorkDir(daemon: DaemonId, c: { bundle: string; workDir: string }): void {
  makeWorkDir(c.workDir);
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
 * The containers of `stateRoot` whose work dir a dead daemon of `self`'s directory made, found
 * when this is made (a few reads per work dir), cleaned up by run(). The daemon serves
 * meanwhile (the clean-up waits on the kernel: two unmounts and a removal per container, some
 * 10 ms each under load, 10 s or more after a crash under a thousand); a Create of the same
 * container id waits for its clean-up first (settled()).
 */
export class Sweep {
  private readonly pending = new Map<string, { c: LeftContainer; done: Promise<void>; resolve: () => void }>();
  /** Work dirs a clean-up renamed aside and was killed before it removed them (../runtime-v2/delete.ts). */
  private readonly aside: string[] = [];

  constructor(
    private readonly stateRoot: string,
    private readonly log: Logger,
    self: DaemonId,
  ) {
    const root = dirname(containerStateDir("_", stateRoot));
    for (const namespace of list(root)) {
      for (const id of list(join(root, namespace))) {
        const remover = removerOf(id);
        if (remover !== undefined) {
          if (!alive(remover)) this.aside.push(join(root, namespace, id));
          continue;
        }
        const owner = ownerOf(join(root, namespace, id));
        if (!owner || owner.dir !== self.dir || owner.pid === self.pid || lives(owner)) continue;
        const { promise, resolve } = Promise.withResolvers<void>();
        this.pending.set(key(namespace, id), { c: { namespace, id, bundle: owner.bundle }, done: promise, resolve });
      }
    }
  }

  /** How many containers it found (and dirs left aside by a killed clean-up). */
  get found(): number {
    return this.pending.size + this.aside.length;
  }

  /** Resolves once container `id` of `namespace` is not (or no longer) being cleaned up. */
  settled(namespace: string, id: string): Promise<void> {
    return this.pending.get(key(namespace, id))?.done ?? Promise.resolve();
  }

  /**
   * Cleans them up, one after the other, the daemon serving between two. Resolves with how many there were, and how many of
   * them could not be cleaned up whole (each failure logged; such a work dir is kept, and the
   * next start tries again).
   */
  async run(): Promise<{ found: number; failed: number }> {
    let failed = 0;
    const found = this.found;
    // Renamed aside only after their view was unmounted: nothing is mounted in them.
    for (const dir of this.aside.splice(0)) {
      try {
        rmSync(dir, { recursive: true, force: true });
        removeIfEmpty(dirname(dir));
      } catch (e) {
        failed++;
        this.log(`removing ${dir}, left by a killed clean-up: ${String(e)}`, "warning");
      }
    }
    for (const [k, { c, resolve }] of this.pending) {
      let failures = 0;
      try {
        await cleanUpLeftovers(c, this.stateRoot, (m) => {
          failures++;
          this.log(`cleaning up ${c.namespace}/${c.id} of a dead daemon: ${m}`, "warning");
        });
      } catch (e) {
        failures++;
        this.log(`cleaning up ${c.namespace}/${c.id} of a dead daemon: ${String(e)}`, "warning");
      } finally {
        this.pending.delete(k);
        resolve();
      }
      if (failures > 0) failed++;
      // Its unmounts and removals are synchronous calls: between two containers the daemon
      // serves what came meanwhile (a sweep of a thousand takes tens of seconds under load).
      await new Promise((r) => setImmediate(r));
    }
    return { found, failed };
  }
}

/** Finds and cleans up, at once (see Sweep). */
export function sweepDeadDaemons(self: DaemonId, stateRoot: string, log: Logger): Promise<{ found: number; failed: number }> {
  return new Sweep(stateRoot, log, self).run();
}

const key = (namespace: string, id: string) => `${namespace}/${id}`;

/** rmdir, if nothing else is in it (another container of the namespace). */
function removeIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {}
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
