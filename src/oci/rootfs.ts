// Mount containerd's Create rootfs mounts on <bundle>/rootfs, unmount them on Delete.
//
// containerd hands the shim a list of containerd.types.Mount {type, source, target, options}
// (usually one overlay with lowerdir=…,upperdir=…,workdir=…, or a bind mount of a snapshot);
// the bundle's rootfs/ is empty until the shim mounts them.
//
// We call mount(2)/umount2(2) from libc through bun:ffi rather than spawning /bin/mount:
// no dependency on util-linux inside a minimal host, no option re-parsing by another tool,
// and errno comes back to us directly. mount(2) only touches the calling thread's mount
// namespace, which is the whole process's, so it is safe from a multithreaded Bun process
// (unlike unshare/setns; docs/ARCHITECTURE.md, "Processes").

import { mkdirSync } from "node:fs";
import { join, normalize } from "node:path";
import { mount, strerror, umount2 } from "../linux/libc.ts";

/** containerd.types.Mount (proto field names). */
export interface Mount {
  type: string;
  source: string;
  target?: string;
  options?: string[];
}

// <sys/mount.h> / <linux/mount.h>
export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  SYNCHRONOUS: 0x10,
  REMOUNT: 0x20,
  MANDLOCK: 0x40,
  DIRSYNC: 0x80,
  NOSYMFOLLOW: 0x100,
  NOATIME: 0x400,
  NODIRATIME: 0x800,
  BIND: 0x1000,
  REC: 0x4000,
  SILENT: 0x8000,
  UNBINDABLE: 0x20000,
  PRIVATE: 0x40000,
  SLAVE: 0x80000,
  SHARED: 0x100000,
  RELATIME: 0x200000,
  STRICTATIME: 0x1000000,
  LAZYTIME: 0x2000000,
} as const;
const MNT_DETACH = 0x2;
const UMOUNT_NOFOLLOW = 0x8;
const EINVAL = 22;
const ENOENT = 2;

/** fstab option → [set?, flag]. Options not listed here go to the filesystem's data string. */
const FLAG_OPTIONS: Record<string, [boolean, number]> = {
  async: [false, MS.SYNCHRONOUS],
  atime: [false, MS.NOATIME],
  bind: [true, MS.BIND],
  defaults: [false, 0],
  dev: [false, MS.NODEV],
  diratime: [false, MS.NODIRATIME],
  dirsync: [true, MS.DIRSYNC],
  exec: [false, MS.NOEXEC],
  mand: [true, MS.MANDLOCK],
  noatime: [true, MS.NOATIME],
  nodev: [true, MS.NODEV],
  nodiratime: [true, MS.NODIRATIME],
  noexec: [true, MS.NOEXEC],
  nomand: [false, MS.MANDLOCK],
  norelatime: [false, MS.RELATIME],
  nostrictatime: [false, MS.STRICTATIME],
  nosuid: [true, MS.NOSUID],
  nosymfollow: [true, MS.NOSYMFOLLOW],
  rbind: [true, MS.BIND | MS.REC],
  relatime: [true, MS.RELATIME],
  remount: [true, MS.REMOUNT],
  ro: [true, MS.RDONLY],
  rw: [false, MS.RDONLY],
  strictatime: [true, MS.STRICTATIME],
  suid: [false, MS.NOSUID],
  sync: [true, MS.SYNCHRONOUS],
  lazytime: [true, MS.LAZYTIME],
  nolazytime: [false, MS.LAZYTIME],
};

/** Propagation options: applied by a separate mount(2) call after the main one. */
const PROPAGATION: Record<string, number> = {
  private: MS.PRIVATE,
  rprivate: MS.PRIVATE | MS.REC,
  shared: MS.SHARED,
  rshared: MS.SHARED | MS.REC,
  slave: MS.SLAVE,
  rslave: MS.SLAVE | MS.REC,
  unbindable: MS.UNBINDABLE,
  runbindable: MS.UNBINDABLE | MS.REC,
};

export interface ParsedOptions {
  flags: number;
  propagation: number;
  data: string;
}

/** Split fstab-style options into mount(2) flags, a propagation change and the data string. */
export function parseMountOptions(options: string[] = []): ParsedOptions {
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  for (const o of options) {
    const f = FLAG_OPTIONS[o];
    if (f) {
      if (f[0]) flags |= f[1];
      else flags &= ~f[1];
      continue;
    }
    const p = PROPAGATION[o];
    if (p !== undefined) {
      propagation |= p;
      continue;
    }
    data.push(o);
  }
  return { flags, propagation, data: data.join(",") };
}

export class MountError extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

function sysMount(source: string, target: string, fstype: string | null, flags: number, data: string | null, what: string) {
  const [rc, e] = mount(source, target, fstype, flags, data);
  if (rc !== 0) throw new MountError(`${what}: mount(${fstype ?? "-"} ${source} on ${target}): ${strerror(e)} (errno ${e})`, e);
}

/** Mount one containerd Mount at `target` (an absolute host path). */
export function mountOne(m: Mount, target: string): void {
  const o = parseMountOptions(m.options);
  // containerd's data strings longer than a page fail with EINVAL; containerd itself works around
  // overlays with many layers by chdir + relative lowerdirs, which a multithreaded process cannot
  // do safely. Say so instead of failing obscurely.
  if (o.data.length >= 4096) {
    throw new MountError(`mount ${m.type} on ${target}: options are ${o.data.length} bytes (limit 4095; too many layers)`, EINVAL);
  }
  const isBind = (o.flags & MS.BIND) !== 0 || m.type === "bind";
  if (isBind) {
    // A bind ignores every flag but MS_REC on the first call; ro/nosuid/... need a remount.
    sysMount(m.source, target, null, MS.BIND | (o.flags & MS.REC), null, "bind");
    const rest = o.flags & ~(MS.BIND | MS.REC | MS.REMOUNT);
    if (rest) sysMount(m.source, target, null, MS.REMOUNT | MS.BIND | rest, null, "bind remount");
  } else {
    sysMount(m.source, target, m.type, o.flags, o.data || null, m.type);
  }
  if (o.propagation) sysMount("", target, null, o.propagation, null, "propagation");
}

/** Path of the rootfs directory in a bundle. */
export function rootfsPath(bundle: string): string {
  return join(bundle, "rootfs");
}

/** Where each mount goes: <bundle>/rootfs, or a path below it (Mount.target). */
function mountTargets(bundle: string, mounts: Mount[]): string[] {
  const root = rootfsPath(bundle);
  return mounts.map((m) => {
    const sub = normalize(`/${m.target ?? ""}`);
    return sub === "/" ? root : join(root, sub);
  });
}

/** Undoes the mounts made so far (newest first) and rethrows what stopped them. */
function undoAndThrow(done: string[], e: unknown): never {
  for (const t of done.reverse()) unmountAll(t);
  throw e;
}

/**
 * Mount containerd's rootfs mounts, in order, on <bundle>/rootfs (a Mount.target, when set, is a
 * path below it; each target is made once the mounts before it are in place, since it may lie
 * inside one). On failure, what was mounted is undone and the error rethrown.
 *
 * It runs on the Task service's request path, yet the directories are made with synchronous
 * calls, microseconds each (docs/ARCHITECTURE.md, "Bun's thread pool"). It stays async for its callers, and the mount(2) calls themselves stay on
 * this thread: each is one system call, mount namespaces belong to the whole process so
 * another thread would change nothing, and a worker would need its own FFI binding.
 */
export async function mountRootfsAsync(bundle: string, mounts: Mount[]): Promise<string> {
  const root = rootfsPath(bundle);
  mkdirSync(root, { recursive: true, mode: 0o711 });
  const targets = mountTargets(bundle, mounts);
  const done: string[] = [];
  try {
    for (const [i, m] of mounts.entries()) {
      mkdirSync(targets[i]!, { recursive: true });
      // Before mounting: a mount made of several calls (bind, then remount ro) that
      // fails halfway is still undone.
      done.push(targets[i]!);
      mountOne(m, targets[i]!);
    }
  } catch (e) {
    undoAndThrow(done, e);
  }
  return root;
}

/**
 * Detach every mount stacked on `target` (MNT_DETACH: busy files do not block Delete).
 * Idempotent: a path that is not (or no longer) a mount point, or does not exist, is fine.
 * Returns how many mounts were removed.
 */
export function unmountAll(target: string): number {
  let n = 0;
  for (let i = 0; i < 64; i++) {
    const [rc, e] = umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW);
    if (rc === 0) {
      n++;
      continue;
    }
    if (e === EINVAL || e === ENOENT) return n;
    throw new MountError(`umount ${target}: ${strerror(e)} (errno ${e})`, e);
  }
  return n;
}

/** Unmount <bundle>/rootfs (everything mounted there, sub-targets included by detach). */
export function unmountRootfs(bundle: string): number {
  return unmountAll(rootfsPath(bundle));
}
