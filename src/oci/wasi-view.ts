// The filesystem a wasm module sees through WASI (RunPlan.view, src/engines/run-plan.ts): the
// container's rootfs and its bind-mounted directories (volumes), without the kernel's
// interfaces and without device nodes. runc mounts /proc, /sys and /dev into every container,
// and the executor needs them (the dynamic loader and Bun read /proc/self/*, stdio may be
// /dev/null); a module must not: /proc/1/environ holds the executor's environment,
// /proc/self/mem its memory, /sys and /dev the host's devices and kernel settings.
//
// One list, `viewVolumes`, says what is in the view; both modes make it by mounts, so that no
// path (with "..", symlinks, /proc/self/root) can reach what is not mounted there:
//
//   <view>          a non-recursive bind of the rootfs (the image's files, with nothing that
//                   is mounted on top of them), nosuid and nodev, read-only if the root is
//   <view>/<dest>   each volume again, non-recursive, nosuid and nodev, read-only if asked
//
//  - normal mode: runc mounts it from the derived spec (`viewMounts`) at a point of the
//    container (`viewMountPoint`), and the executor preopens that point as the module's "/".
//    The executor keeps its own full view of the container.
//  - shared mode: the daemon mounts it itself (`mountView`) under the container's work dir
//    (VIEW_DIR) and preopens that directory as "/"; `unmountView` takes it down on delete
//    (and the thin shim's delete after a daemon crash, src/runtime-v2/delete.ts).
// nodev is what makes a device node in an image (or a volume) fail with EACCES in both modes.
// Whose files: normal mode's executor runs as the spec's user (runc), so the kernel checks the
// module's access as that user's; shared mode's view is re-mounted idmapped to that user
// (`mountViewAs`, ../linux/idmap.ts), since the daemon's threads are root and shared.

import { closeSync, mkdirSync, statSync } from "node:fs";
import { isAbsolute, join, normalize, posix } from "node:path";
import type { RunUser, ViewVolume, WasiView } from "../engines/run-plan.ts";
import { IdmapError, idMaps, idmapInPlace, remountIdmapped, userNamespace } from "../linux/idmap.ts";
import { makeDirsInRoot } from "./in-root.ts";
import { MountError, mountOne, unmountAll } from "./rootfs.ts";
import type { Spec, SpecMount } from "./spec.ts";

/** Directories of the container a module does not see, with everything under them. */
export const HIDDEN_FROM_WASI = ["/proc", "/sys", "/dev"] as const;

const VIEW_NAME = ".bunwasi-root";
/** Shared mode: the view's directory in the container's work dir. */
export const VIEW_DIR = "wasi-root";

/** `path` is `dir` or below it (a trailing slash on `path` does not count). */
export function isUnder(path: string, dir: string): boolean {
  const p = path.replace(/\/+$/, "") || "/";
  return p === dir || p.startsWith(`${dir}/`);
}

/** A bind mount (type "bind", or a "bind"/"rbind" option: runc takes either). */
function isBind(m: SpecMount): boolean {
  const opts = m.options ?? [];
  return m.type === "bind" || opts.includes("bind") || opts.includes("rbind");
}

/**
 * The spec's volumes as the module sees them: bind-mounted directories at their destination,
 * read-only when the mount is. Not in the view: other mounts (proc, sysfs, the /dev tmpfs,
 * mqueue, any tmpfs: the container's kernel views), bind mounts of files (resolv.conf, hosts:
 * a WASI view is directories), sources that are gone, relative paths, and anything from or
 * onto /proc, /sys and /dev.
 */
export function viewVolumes(spec: Spec): ViewVolume[] {
  const out: ViewVolume[] = [];
  for (const m of spec.mounts ?? []) {
    if (!isBind(m) || !m.source || !m.destination || !isAbsolute(m.source) || !isAbsolute(m.destination)) continue;
    const destination = posix.normalize(m.destination).replace(/\/+$/, "");
    const source = normalize(m.source);
    if (!destination || destination === "/" || HIDDEN_FROM_WASI.some((d) => isUnder(destination, d) || isUnder(source, d))) continue;
    try {
      if (!statSync(source).isDirectory()) continue;
    } catch {
      continue;
    }
    // "rro" (a recursive read-only mount, CRI's recursiveReadOnly): the view's bind is not
    // recursive, so a read-only one is read-only all the way down.
    const options = m.options ?? [];
    out.push({ source, destination, readOnly: options.includes("ro") || options.includes("rro") });
  }
  return out;
}

/** Normal mode: where runc mounts the view in the container (in runc's /dev tmpfs, else at the top). */
export function viewMountPoint(spec: Spec): string {
  const devTmpfs = (spec.mounts ?? []).some((m) => m.destination === "/dev" && m.type === "tmpfs");
  return devTmpfs ? `/dev/${VIEW_NAME}` : `/${VIEW_NAME}`;
}

const flags = (readOnly: boolean) => [readOnly ? "ro" : "rw", "nosuid", "nodev"];

/** Normal mode: the spec mounts that make `view` at `at` in the container. */
export function viewMounts(view: WasiView, at: string): SpecMount[] {
  return [
    { destination: at, type: "bind", source: view.root, options: ["bind", ...flags(view.readOnly)] },
    ...view.volumes.map((v) => ({
      destination: `${at}${v.destination}`,
      type: "bind",
      source: v.source,
      options: ["bind", ...flags(v.readOnly)],
    })),
  ];
}

/**
 * Shared mode: mounts `view` at the host directory `at` (made if missing). Each volume's mount
 * point is made as runc makes one: in the rootfs (or in the volume it lies in), symlinks
 * resolved inside the container. Every mount is private, so none propagates to or from the
 * rootfs's peers. Returns where each volume is mounted, in order. On failure what was mounted
 * is taken down and the error thrown.
 */
export function mountView(view: WasiView, at: string): string[] {
  mkdirSync(at, { recursive: true, mode: 0o700 });
  // Mount points on the rootfs itself are made before the view exists (it may be read-only);
  // one inside another volume is made there, through the view.
  const onRoot = view.volumes.filter((v, i) => !view.volumes.slice(0, i).some((o) => isUnder(v.destination, o.destination)));
  for (const v of onRoot) {
    try {
      makeDirsInRoot(view.root, v.destination);
    } catch (e) {
      throw new Error(`volume ${v.destination}: cannot make its mount point in the container's rootfs: ${(e as Error).message}`);
    }
  }
  mountOne({ type: "bind", source: view.root, options: ["bind", "private", ...flags(view.readOnly)] }, at);
  const targets: string[] = [];
  try {
    for (const v of view.volumes) {
      let target: string;
      try {
        target = makeDirsInRoot(at, v.destination).host;
      } catch (e) {
        throw new Error(`volume ${v.destination}: cannot make its mount point: ${(e as Error).message}`);
      }
      mountOne({ type: "bind", source: v.source, options: ["bind", "private", ...flags(v.readOnly)] }, target);
      targets.push(target);
    }
  } catch (e) {
    unmountAll(at);
    throw e;
  }
  return targets;
}

/**
 * Shared mode: mounts `view` at `at` (as `mountView`) as `user` (process.user) sees it: the
 * rootfs re-mounted over idmapped layers and each volume idmapped (../linux/idmap.ts), so that
 * whatever thread of the daemon touches them (none with a capability over files) the kernel
 * checks the access as that user's, and files made there are that user's. The daemon's own ids
 * need no map: then it is `mountView`. Called before anything reads the rootfs for the
 * container (the compile): its overlay is mounted anew. On failure what it mounted in the view
 * is taken down and the error thrown.
 */
export async function mountViewAs(view: WasiView, at: string, user: RunUser): Promise<void> {
  const maps = idMaps(user);
  if (!maps) {
    mountView(view, at);
    return;
  }
  const as = `the module's view as user ${user.uid}:${user.gid}`;
  let ns: number;
  try {
    ns = await userNamespace(maps.uidMap, maps.gidMap);
  } catch (e) {
    throw new Error(`${as}: ${(e as Error).message}`);
  }
  try {
    // The view's own directory is the scratch place of the layers while the overlay is made.
    mkdirSync(at, { recursive: true, mode: 0o700 });
    remountIdmapped(view.root, at, ns);
    const targets = mountView(view, at);
    try {
      // Each volume that lies in no other one, with those that lie in it.
      for (const [i, v] of view.volumes.entries()) {
        if (view.volumes.slice(0, i).some((o) => isUnder(v.destination, o.destination))) continue;
        idmapInPlace(targets[i] as string, ns);
      }
    } catch (e) {
      unmountAll(at);
      throw e;
    }
  } catch (e) {
    throw new Error(`${as}: ${e instanceof IdmapError ? e.message : String(e)}`);
  } finally {
    closeSync(ns);
  }
}

/**
 * Shared mode: takes the view at `at` down (MNT_DETACH: its volumes with it, busy files do not
 * hold it). Throws if it could not: then `at` must not be removed recursively, which would
 * reach into the rootfs and the volumes.
 */
export function unmountView(at: string): void {
  try {
    unmountAll(at);
  } catch (e) {
    // A path through a file cannot be a mount point: nothing to take down.
    if (!(e instanceof MountError && e.errno === ENOTDIR)) throw e;
  }
}

const ENOTDIR = 20;

/** Shared mode: the view's directory of the container whose work dir is `workDir`. */
export const viewDir = (workDir: string): string => join(workDir, VIEW_DIR);
