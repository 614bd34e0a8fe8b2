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

import { closeSync, mkdirSync, openSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import {
  AT_RECURSIVE,
  EINVAL,
  MNT_DETACH,
  MOUNT_ATTR_IDMAP,
  MS_PRIVATE,
  mount,
  mountSetattr,
  moveMount,
  O_CLOEXEC,
  OPEN_TREE_CLONE,
  openTree,
  setgroupsThisThread,
  strerror,
  umount2,
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

const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_NOEXEC = 0x8;

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

/** An idmapped copy of the mount at `path` (with what is mounted below it when `recursive`), detached: its fd. */
function idmappedClone(path: string, usernsFd: number, recursive: boolean): number {
  const [tree, e1] = openTree(path, OPEN_TREE_CLONE | O_CLOEXEC | (recursive ? AT_RECURSIVE : 0));
  if (tree < 0) throw new IdmapError(`open_tree ${path}: ${strerror(e1)}`);
  const [r, e2] = mountSetattr(tree, recursive ? AT_RECURSIVE : 0, { set: MOUNT_ATTR_IDMAP, propagation: MS_PRIVATE, usernsFd });
  if (r < 0) {
    closeSync(tree);
    const why = e2 === EINVAL ? " (its filesystem has no idmapped mounts)" : "";
    throw new IdmapError(`idmapped mount of ${path}: ${strerror(e2)}${why}`);
  }
  return tree;
}

function attach(tree: number, at: string): void {
  const [m, e] = moveMount(tree, at);
  if (m < 0) throw new IdmapError(`move_mount to ${at}: ${strerror(e)}`);
}

/**
 * Re-mounts the mount at `at` (with everything mounted beneath it) idmapped through the user
 * namespace `usernsFd`, private, in place: a clone is idmapped while detached (the only state
 * in which a mount can be), the original taken down, the clone put at `at`. The mounts keep
 * their flags (nosuid, nodev, ro). On failure `at` is as it was, or empty past the unmount.
 */
export function idmapInPlace(at: string, usernsFd: number): void {
  const tree = idmappedClone(at, usernsFd, true);
  try {
    detach(at);
    attach(tree, at);
  } finally {
    closeSync(tree);
  }
}

/**
 * Re-mounts the container's rootfs at `path` so that its files are seen through the user
 * namespace `usernsFd`. An overlay cannot be idmapped itself, but its layers can: the same
 * overlay is mounted anew over idmapped copies of its lower directories and of its upper and
 * work directories' parent, attached for the mount inside a small tmpfs mounted on `scratch`
 * (an empty directory) and taken down with it right after (the overlay keeps its own
 * references to them). A crash meanwhile leaves them to an unmount of `scratch`, which takes
 * them all, never to a recursive removal (which would reach into the image's layers through
 * them). Copy-up, new files and permission checks then
 * all go through the mapping, as for a native container of that user. Anything else mounted
 * there (a bind of a snapshot directory) is idmapped in place.
 */
export function remountIdmapped(path: string, scratch: string, usernsFd: number): void {
  const mounts = readMountinfo();
  const top = mounts.findLast((m) => m.mountPoint === path);
  if (!top) throw new IdmapError(`${path} is not a mount point`);
  if (mounts.some((m) => m.mountPoint.startsWith(`${path}/`))) throw new IdmapError(`${path} has mounts below it: not supported`);
  if (top.fstype !== "overlay") {
    idmapInPlace(path, usernsFd);
    return;
  }

  const lowers: string[] = [];
  let upper: string | undefined;
  let work: string | undefined;
  const rest: string[] = [];
  for (const o of splitUnescaped(top.superOptions, ",")) {
    const eq = o.indexOf("=");
    const [k, v] = eq < 0 ? [o, ""] : [o.slice(0, eq), o.slice(eq + 1)];
    if (k === "lowerdir") lowers.push(...splitUnescaped(v, ":"));
    else if (k === "lowerdir+") lowers.push(v);
    else if (k === "upperdir") upper = v;
    else if (k === "workdir") work = v;
    else if (k === "datadir+") throw new IdmapError(`${path}: an overlay with data-only layers is not supported`);
    else if (o !== "rw" && o !== "ro") rest.push(o);
  }
  for (const d of [...lowers, upper, work]) {
    if (d !== undefined && (!d.startsWith("/") || d.includes("\\")))
      throw new IdmapError(`${path}: overlay layer ${JSON.stringify(d)} is not an absolute plain path`);
  }
  if ((upper === undefined) !== (work === undefined) || (upper && work && dirname(upper) !== dirname(work)))
    throw new IdmapError(`${path}: overlay upperdir and workdir not side by side`);

  const [t, te] = mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700,size=64k");
  if (t < 0) throw new IdmapError(`mount tmpfs on ${scratch}: ${strerror(te)}`);
  const place = (source: string, name: string): string => {
    const at = join(scratch, name);
    mkdirSync(at);
    const tree = idmappedClone(source, usernsFd, false);
    try {
      attach(tree, at);
    } finally {
      closeSync(tree);
    }
    return at;
  };
  try {
    const opts = [...rest, `lowerdir=${lowers.map((l, i) => place(l, `.l${i}`)).join(":")}`];
    if (upper && work) {
      const parent = place(dirname(upper), ".u");
      opts.push(`upperdir=${join(parent, basename(upper))}`, `workdir=${join(parent, basename(work))}`);
    }
    const data = opts.join(",");
    if (data.length >= 4096) throw new IdmapError(`${path}: the overlay's options would exceed a page (${lowers.length} layers)`);
    detach(path);
    const [r, e] = mount("overlay", path, "overlay", mountFlags(top.mountOptions), data);
    if (r < 0) throw new IdmapError(`mount overlay on ${path} over idmapped layers: ${strerror(e)}`);
  } finally {
    // The tmpfs and every copy in it.
    detach(scratch);
  }
}

function detach(path: string): void {
  const [r, e] = umount2(path, MNT_DETACH);
  if (r < 0 && e !== EINVAL) throw new IdmapError(`umount ${path}: ${strerror(e)}`);
}

/** The per-mount flags of a mountinfo options field, as mount(2) takes them. */
function mountFlags(options: string): number {
  const FLAGS: Record<string, number> = { ro: 0x1, nosuid: 0x2, nodev: 0x4, noexec: 0x8, noatime: 0x400, nodiratime: 0x800 };
  return options.split(",").reduce((f, o) => f | (FLAGS[o] ?? 0), 0);
}

interface MountLine {
  mountPoint: string;
  mountOptions: string;
  fstype: string;
  superOptions: string;
}

/** This process's mounts (/proc/self/mountinfo), paths decoded. */
function readMountinfo(): MountLine[] {
  const decode = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
  const out: MountLine[] = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const f = line.split(" ");
    const dash = f.indexOf("-", 6);
    if (dash < 0) continue;
    out.push({
      mountPoint: decode(f[4] ?? ""),
      mountOptions: f[5] ?? "",
      fstype: f[dash + 1] ?? "",
      superOptions: decode(f[dash + 3] ?? ""),
    });
  }
  return out;
}

/** Split on `sep` where it is not escaped with a backslash (overlay escapes , and : in its paths). */
function splitUnescaped(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = "";
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as string;
    if (c === "\\" && i + 1 < s.length) {
      cur += s[++i];
    } else if (c === sep) {
      out.push(cur);
      cur = "";
    } else cur += c;
  }
  out.push(cur);
  return out;
}
