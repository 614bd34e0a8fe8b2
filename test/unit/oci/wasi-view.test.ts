// src/oci/wasi-view.ts: the mounts that give a module the container's files without /proc,
// /sys and /dev (a CRI-like spec's mounts in, the view's mounts out), and where it goes.
import { describe, expect, test } from "bun:test";
import type { Spec, SpecMount } from "../../../src/oci/spec.ts";
import { viewMountPoint, viewMounts } from "../../../src/oci/wasi-view.ts";

/** The mounts containerd's CRI puts in a container's spec, plus two volumes. */
const CRI_MOUNTS: SpecMount[] = [
  { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
  { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
  { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec"] },
  { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
  { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
  { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", "ro"] },
  { destination: "/etc/hosts", type: "bind", source: "/var/lib/c/hosts", options: ["rbind", "rprivate", "rw"] },
  { destination: "/dev/shm", type: "bind", source: "/run/c/shm", options: ["rbind", "rprivate", "rw"] },
  { destination: "/config", type: "bind", source: "/host/config", options: ["rbind", "rprivate", "ro"] },
  { destination: "/data/", type: "bind", source: "/host/data", options: ["rbind", "rprivate", "rw"] },
  { destination: "/processed", type: "bind", source: "/host/p", options: ["rbind"] },
];

const spec = (o: Partial<Spec> = {}): Spec => ({
  ociVersion: "1.0.2",
  process: { args: ["/app.wasm"], cwd: "/" },
  root: { path: "rootfs" },
  mounts: CRI_MOUNTS,
  ...o,
});

describe("the module's view", () => {
  test("the rootfs bound once more, then every mount but those at or under /proc, /sys, /dev, under the view", () => {
    expect(viewMounts(spec(), "/b/rootfs", "/dev/.bunwasi-root")).toEqual([
      { destination: "/dev/.bunwasi-root", type: "bind", source: "/b/rootfs", options: ["bind", "rw", "nosuid", "nodev"] },
      { destination: "/dev/.bunwasi-root/etc/hosts", type: "bind", source: "/var/lib/c/hosts", options: ["rbind", "rprivate", "rw"] },
      { destination: "/dev/.bunwasi-root/config", type: "bind", source: "/host/config", options: ["rbind", "rprivate", "ro"] },
      { destination: "/dev/.bunwasi-root/data/", type: "bind", source: "/host/data", options: ["rbind", "rprivate", "rw"] },
      // A name that only starts like a hidden directory is kept.
      { destination: "/dev/.bunwasi-root/processed", type: "bind", source: "/host/p", options: ["rbind"] },
    ]);
  });

  test("a read-only root gives a read-only view (runc remounts only the container's own root)", () => {
    expect(viewMounts(spec({ root: { path: "rootfs", readonly: true } }), "/r", "/v")[0]?.options).toEqual([
      "bind",
      "ro",
      "nosuid",
      "nodev",
    ]);
  });

  test("the mount point: in runc's /dev tmpfs, else at the top of the rootfs", () => {
    expect(viewMountPoint(spec())).toBe("/dev/.bunwasi-root");
    expect(viewMountPoint(spec({ mounts: CRI_MOUNTS.filter((m) => m.destination !== "/dev") }))).toBe("/.bunwasi-root");
  });
});
