// Idmapped mounts: how the shared-mode daemon (root, its threads shared by every container)
// makes a module's file access that of the container's user (process.user).
//
// Per-thread credentials alone cannot do it: libwasmtime's WASI does each file operation on a
// thread of its tokio blocking pool, shared by every run of the process (measured: a module's
// openat2 came from such a thread, not from its run's), and a pool thread keeps the
// credentials of whichever run's thread started it. So two things hold for every thread that
// touches a module's files, the same for all of them, and the mount says whose access it is:
//
//  - no capability overrides a file's permissions: a run's thread gives up CAP_CHOWN,
//    CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER and CAP_FSETID before the module runs
//    (src/engines/wasmtime/worker.ts; the http library's threads likewise), and the pool
//    threads it starts inherit that; its groups are the daemon's reserved ones (joinGroupSlots);
//  - the view is re-mounted idmapped (mount_setattr(2), MOUNT_ATTR_IDMAP) through a user
//    namespace whose maps send the container's uid to the daemon's (the thread's fsuid), its
//    gid to the daemon's gid, each additional group to a reserved group, and complete that
//    into a permutation of all ids (an unmapped owner would make the kernel refuse every write
//    to its inodes, a world-writable /tmp included).
//
// So a root-owned directory is checked against its "other" bits, a file of the container's
// user against its owner bits, an fsGroup volume against its group bits, and what the module
// creates is owned by the container's uid and gid, as under runc, whichever thread asks.
// A root container (no map needed) runs without those capabilities too: files it does not own
// are checked against their mode bits, where runc's default capabilities would override them.
//
// A user namespace is made by a process (unshare(CLONE_NEWUSER) needs a single-threaded
// caller): `unshare --user` waits while the daemon writes its maps and takes a reference to
// its namespace; the mount keeps the namespace alive after that process is gone.

import { closeSync, openSync, readlinkSync, writeFileSync } from "node:fs";
import {
  AT_RECURSIVE,
  MOUNT_ATTR_IDMAP,
  MS_PRIVATE,
  mountSetattr,
  moveMount,
  O_CLOEXEC,
  OPEN_TREE_CLONE,
  openTree,
  setgroupsThisThread,
  strerror,
} from "./libc.ts";

/** Whom a view is mapped to. */
export interface IdmapUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
}

/**
 * The daemon's reserved groups: an additional group of a container is mapped to one of these,
 * and every thread the daemon starts belongs to all of them (and to no other supplementary
 * group, which a container's files could otherwise be reached through). Numbers near the top of
 * the 32-bit range, below the invalid 2^32-1, which hosts do not give their groups.
 */
export const GROUP_SLOT_BASE = 0xffff_ff00;
export const GROUP_SLOTS = 64;

/** An idmapped view could not be made (the filesystem of the view, or of a volume, has no support). */
export class IdmapError extends Error {}

/**
 * The calling thread's supplementary groups become the reserved ones (GROUP_SLOT_BASE), and
 * only those; every thread it starts afterwards inherits them. The daemon calls it on its main
 * thread at start, before any run's thread, engine thread or http library thread exists: they
 * are all started from that thread or from threads it started. Returns an error message, or
 * undefined.
 */
export function joinGroupSlots(): string | undefined {
  const [r, e] = setgroupsThisThread(Array.from({ length: GROUP_SLOTS }, (_, i) => GROUP_SLOT_BASE + i));
  return r < 0 ? `setgroups: ${strerror(e)}` : undefined;
}

/** The highest id a map may name (2^32-1 is the invalid id). */
const MAX_ID = 0xffff_fffe;

/**
 * Map lines ("inside outside count") for the id permutation that sends each `inside` of
 * `wanted` to its `outside`, completed into a permutation (every id is mapped, once each way:
 * an owner left unmapped would make the kernel refuse every write to its inodes), identity
 * elsewhere. `wanted` must not map two ids to one.
 */
export function permutationMap(wanted: [number, number][]): string {
  const to = new Map<number, number>();
  for (const [i, o] of wanted) if (i !== o) to.set(i, o);
  const outs = new Set(to.values());
  // Ids sent away whose own outside is free, and outsides taken whose inside is free: pair them.
  const freeOutsides = [...to.keys()].filter((i) => !outs.has(i)).sort((a, b) => a - b);
  const freeInsides = [...outs].filter((o) => !to.has(o)).sort((a, b) => a - b);
  for (const [k, i] of freeInsides.entries()) to.set(i, freeOutsides[k] as number);
  const ids = [...to.keys()].sort((a, b) => a - b);
  const lines: string[] = [];
  let next = 0;
  for (const i of ids) {
    if (i > next) lines.push(`${next} ${next} ${i - next}`);
    lines.push(`${i} ${to.get(i)} 1`);
    next = i + 1;
  }
  if (next <= MAX_ID) lines.push(`${next} ${next} ${MAX_ID - next + 1}`);
  return `${lines.join("\n")}\n`;
}

/**
 * The uid_map and gid_map of `user`'s view as seen by a process with ids `own` (the daemon's),
 * or undefined when the view needs none (the daemon's own ids, no additional group).
 */
export function idMaps(
  user: IdmapUser,
  own = { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 },
): { uidMap: string; gidMap: string } | undefined {
  // Each additional group once, not the primary; beyond the slots it gives nothing (less access, never more).
  const extra = [...new Set(user.additionalGids ?? [])].filter((g) => g !== user.gid).slice(0, GROUP_SLOTS);
  if (user.uid === own.uid && user.gid === own.gid && extra.length === 0) return undefined;
  return {
    uidMap: permutationMap([[user.uid, own.uid]]),
    gidMap: permutationMap([[user.gid, own.gid], ...extra.map((g, k): [number, number] => [g, GROUP_SLOT_BASE + k])]),
  };
}

/** A user namespace with these maps, as an open fd (the caller closes it). */
export async function userNamespace(uidMap: string, gidMap: string): Promise<number> {
  const own = readlinkSync("/proc/self/ns/user");
  // The shell says "ready" once it runs in the new namespace, then waits for its stdin to end.
  const child = Bun.spawn(["unshare", "--user", "--", "/bin/sh", "-c", "echo ready; read _"], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  try {
    const reader = child.stdout.getReader();
    const first = await reader.read();
    reader.releaseLock();
    const ns = `/proc/${child.pid}/ns/user`;
    if (first.done || readlinkSync(ns) === own) {
      const err = await new Response(child.stderr).text();
      throw new IdmapError(`cannot make a user namespace (unshare --user): ${err.trim() || `exit ${await child.exited}`}`);
    }
    writeFileSync(`/proc/${child.pid}/uid_map`, uidMap);
    writeFileSync(`/proc/${child.pid}/gid_map`, gidMap);
    return openSync(ns, O_CLOEXEC);
  } finally {
    child.stdin.end();
    await child.exited;
  }
}

/**
 * Re-mounts the tree mounted at `at` (with everything mounted beneath it) idmapped through the
 * user namespace `usernsFd`, private, in place: a clone of the tree is idmapped while detached
 * (the only state in which a mount can be), the original is taken down, the clone put at `at`.
 * The mounts keep their flags (nosuid, nodev, ro). On failure `at` is left as it was, or empty
 * after a failure past the unmount (the caller unmounts `at` either way).
 */
export function idmapTree(at: string, usernsFd: number, unmount: (at: string) => void): void {
  const [tree, e1] = openTree(at, OPEN_TREE_CLONE | AT_RECURSIVE | O_CLOEXEC);
  if (tree < 0) throw new IdmapError(`open_tree ${at}: ${strerror(e1)}`);
  try {
    const [r, e2] = mountSetattr(tree, AT_RECURSIVE, { set: MOUNT_ATTR_IDMAP, propagation: MS_PRIVATE, usernsFd });
    if (r < 0) {
      const why = e2 === 22 /* EINVAL */ ? " (a filesystem of the view without idmapped mounts?)" : "";
      throw new IdmapError(`mount_setattr MOUNT_ATTR_IDMAP ${at}: ${strerror(e2)}${why}`);
    }
    unmount(at);
    const [m, e3] = moveMount(tree, at);
    if (m < 0) throw new IdmapError(`move_mount ${at}: ${strerror(e3)}`);
  } finally {
    closeSync(tree);
  }
}
