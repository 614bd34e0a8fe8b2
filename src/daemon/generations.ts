// Daemons of one socket directory across a hand-over (docs/ARCHITECTURE.md, "Hand-over").
// One daemon serves (holds the directory's lock, ./lock.ts, and the manager socket); daemons
// it took over from drain beside it: each serves its own sandboxes until containerd has
// deleted them, then exits. Every file a daemon binds carries its pid in its name, so no two
// daemons ever bind, or remove, the same path:
//
//   <dir>/sandboxes/<key hash>.<pid>.sock   one sandbox's Task service
//   <dir>/daemons/<pid>.sock                the daemon's manager service, reachable by pid
//                                           (the manager socket's path goes to the newest)
//
// A file whose pid is no live process is a dead daemon's, and any daemon may remove it.

import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { Client, type ServiceClient } from "../ttrpc/index.ts";
import { alive, daemonsDir, liveDaemons, pidOf } from "./daemon-files.ts";
import {
  type CreateSandboxRequest,
  type CreateSandboxResponse,
  type DeleteSandboxRequest,
  type DeleteSandboxResponse,
  ManagerDefinition,
} from "./gen/bunwasi/manager/v1/manager.ts";
import { DaemonLocked, lockDaemonDir } from "./lock.ts";

/** How long a successor waits for the serving daemon to answer and let go of the lock. */
export const HAND_OVER_TIMEOUT_MS = 10_000;
/** How long a lookup waits for another daemon's sandbox socket to accept a connection. */
const PROBE_TIMEOUT_MS = 500;

export type ManagerClient = ServiceClient<typeof ManagerDefinition>;

/** The files of the daemons of one socket directory. */
export class Generations {
  readonly sandboxDir: string;
  readonly daemonsDir: string;

  constructor(
    readonly socket: string,
    readonly pid: number = process.pid,
  ) {
    this.sandboxDir = join(dirname(socket), "sandboxes");
    this.daemonsDir = daemonsDir(socket);
  }

  /** This daemon's own manager socket (reachable by its pid after a successor took the shared path). */
  get ownSocket(): string {
    return this.daemonSocket(this.pid);
  }

  daemonSocket(pid: number): string {
    return join(this.daemonsDir, `${pid}.sock`);
  }

  /** The socket of this daemon's sandbox for `hash` (of its key). */
  sandboxSocket(hash: string, pid: number = this.pid): string {
    return join(this.sandboxDir, `${hash}.${pid}.sock`);
  }

  /**
   * Makes both directories and removes what dead daemons left in them (a crash): files whose
   * pid is no live process, or that name none (a daemon from before hand-overs). A draining
   * daemon's files stay: its pid lives.
   */
  prepare(): { removed: number } {
    let removed = 0;
    for (const dir of [this.sandboxDir, this.daemonsDir]) {
      mkdirSync(dir, { recursive: true, mode: 0o711 });
      for (const name of readdirSync(dir)) {
        const pid = pidOf(name);
        if (pid !== undefined && pid !== this.pid && alive(pid)) continue;
        rmSync(join(dir, name), { force: true, recursive: true });
        removed++;
      }
    }
    return { removed };
  }

  /** The other live daemons of the directory (draining ones), by their manager sockets. */
  others(): number[] {
    return liveDaemons(this.socket, this.pid);
  }

  /**
   * Another daemon's sandbox for `hash` that accepts connections: a pod started before a
   * hand-over stays in the daemon that has it, at the address containerd already knows.
   */
  async foreignSandbox(hash: string): Promise<string | undefined> {
    for (const pid of this.others()) {
      const path = this.sandboxSocket(hash, pid);
      if (existsSync(path) && (await accepts(path))) return `unix://${path}`;
    }
    return undefined;
  }

  /** `shim delete` of a container this daemon does not have: asked of each draining daemon. */
  async deleteElsewhere(req: DeleteSandboxRequest, warn: (m: string) => void): Promise<DeleteSandboxResponse | undefined> {
    for (const pid of this.others()) {
      try {
        const r = await withManager(this.daemonSocket(pid), (m) => m.deleteSandbox(req, { timeoutMs: 10_000 }));
        if (r.found) return r;
      } catch (e) {
        warn(`delete of ${req.namespace}/${req.containerId}: asking daemon ${pid}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return undefined;
  }

  /** A create forwarded to the daemon serving the manager socket now (this one handed over). */
  createAtServing(req: CreateSandboxRequest): Promise<CreateSandboxResponse> {
    return withManager(this.socket, (m) => m.createSandbox(req, { timeoutMs: 10_000 }));
  }
}

/**
 * The directory's lock for a daemon started with --take-over: taken at once when no daemon
 * holds it; else the holder is asked to hand over (HandOver on its own socket, else the
 * manager socket) and the lock is taken once it lets go. A holder that dies meanwhile (a
 * crash mid-hand-over) lets go too: the lock is its open file's. Throws when the holder
 * neither answers nor dies, or refuses (one from before hand-overs: UNIMPLEMENTED).
 */
export async function takeOverLock(g: Generations, log: (m: string) => void): Promise<{ fd: number; from: number | null }> {
  let holder: DaemonLocked;
  try {
    return { fd: lockDaemonDir(g.socket, g.pid), from: null };
  } catch (e) {
    if (!(e instanceof DaemonLocked)) throw e;
    holder = e;
  }
  const pid = holder.holder.pid;
  const target = pid !== null && existsSync(g.daemonSocket(pid)) ? g.daemonSocket(pid) : g.socket;
  let asked: string | undefined;
  try {
    const r = await withManager(target, (m) => m.handOver({ pid: g.pid }, { timeoutMs: HAND_OVER_TIMEOUT_MS }));
    log(`daemon ${r.pid} hands over (it keeps its ${r.sandboxes} sandboxes until they are deleted)`);
  } catch (e) {
    asked = e instanceof Error ? e.message : String(e);
  }
  const deadline = Date.now() + HAND_OVER_TIMEOUT_MS;
  for (;;) {
    try {
      return { fd: lockDaemonDir(g.socket, g.pid), from: pid };
    } catch (e) {
      if (!(e instanceof DaemonLocked)) throw e;
      // Refused, and still holding the lock: it will not let go.
      if (asked !== undefined || Date.now() > deadline) {
        const who = pid === null ? "the daemon holding it" : `daemon ${pid}`;
        throw new Error(
          `cannot take over ${g.socket}: ${who} ${asked ? `did not hand over (${asked})` : "did not let go of its lock"}; nothing was changed`,
        );
      }
    }
    await Bun.sleep(20);
  }
}

async function withManager<T>(socket: string, f: (m: ManagerClient) => Promise<T>): Promise<T> {
  const client = await Client.connect(socket, { timeoutMs: 2000 });
  try {
    return await f(client.service(ManagerDefinition));
  } finally {
    client.close();
  }
}

async function accepts(path: string): Promise<boolean> {
  try {
    (await Client.connect(path, { timeoutMs: PROBE_TIMEOUT_MS })).close();
    return true;
  } catch {
    return false;
  }
}
