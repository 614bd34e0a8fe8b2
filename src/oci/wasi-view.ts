// The filesystem a wasm module sees through WASI: the container's files without the
// kernel's interfaces. runc mounts /proc, /sys and /dev into every container, and the
// executor needs them (the dynamic loader and Bun read /proc/self/*, stdio may be /dev/null);
// a module must not: /proc/1/environ holds the executor's environment, /proc/self/mem its
// memory, /sys and /dev the host's devices and kernel settings.
//
// So the module's "/" is not the container's "/" but a second view of it, mounted by runc
// from the derived spec:
//
//   <view>          a non-recursive bind of the rootfs: the image's files and nothing mounted
//                   on top of them (no proc, sysfs, devices, executor, compile cache)
//   <view>/<dest>   each of the spec's other mounts again (volumes, /etc/hosts, tmpfs, …),
//                   in the spec's order, skipping those at or under /proc, /sys and /dev
//
// and the executor preopens <view> as the guest's "/". Hiding by mounts, not by filtering
// paths in the WASI layer, means no path (with "..", symlinks, /proc/self/root) can reach
// what is not mounted there, and the executor keeps its own full view.
//
// The view's mount point is in the /dev tmpfs runc creates (nothing is written into the
// image, and the view cannot contain itself), or /.bunwasi-root when the spec has no /dev tmpfs.

import type { Spec, SpecMount } from "./spec.ts";

/** Directories of the container a module does not see, with everything under them. */
export const HIDDEN_FROM_WASI = ["/proc", "/sys", "/dev"] as const;

const VIEW_NAME = ".bunwasi-root";

/** `path` is `dir` or below it (a trailing slash on `path` does not count). */
export function isUnder(path: string, dir: string): boolean {
  const p = path.replace(/\/+$/, "") || "/";
  return p === dir || p.startsWith(`${dir}/`);
}

/** Where the view is mounted in the container. */
export function viewMountPoint(spec: Spec): string {
  const devTmpfs = (spec.mounts ?? []).some((m) => m.destination === "/dev" && m.type === "tmpfs");
  return devTmpfs ? `/dev/${VIEW_NAME}` : `/${VIEW_NAME}`;
}

/** The mounts that make the module's view at `at` of the container with rootfs `rootfs`. */
export function viewMounts(spec: Spec, rootfs: string, at: string): SpecMount[] {
  const ro = spec.root?.readonly === true;
  const out: SpecMount[] = [{ destination: at, type: "bind", source: rootfs, options: ["bind", ro ? "ro" : "rw", "nosuid", "nodev"] }];
  for (const m of spec.mounts ?? []) {
    if (HIDDEN_FROM_WASI.some((d) => isUnder(m.destination, d))) continue;
    out.push({ ...m, destination: `${at}${m.destination.startsWith("/") ? "" : "/"}${m.destination}` });
  }
  return out;
}
