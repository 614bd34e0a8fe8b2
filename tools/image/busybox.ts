// A native busybox image: busybox-static's binary at /bin/busybox, a few applet symlinks, sh as
// the default command. For testing the runc path and the harness without any registry.

import { existsSync } from "node:fs";
import type { LayerItem } from "./layer.ts";
import type { ImageSpec } from "./layout.ts";

export const BUSYBOX_APPLETS = ["sh", "echo", "sleep", "cat", "ls", "true", "false"] as const;
export const DEFAULT_BUSYBOX = "/bin/busybox";
export const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export function busyboxImage(opts: { name?: string; busybox?: string } = {}): ImageSpec {
  const source = opts.busybox ?? DEFAULT_BUSYBOX;
  if (!existsSync(source)) throw new Error(`${source} not found (apt-get install busybox-static)`);
  const files: LayerItem[] = [
    { path: "/bin/busybox", source, mode: 0o755 },
    ...BUSYBOX_APPLETS.map((a) => ({ path: `/bin/${a}`, symlink: "busybox" })),
    { path: "/tmp", dir: true, mode: 0o1777 },
  ];
  return {
    name: opts.name ?? "docker.io/library/busybox:latest",
    files,
    config: { cmd: ["sh"], env: [DEFAULT_PATH] },
  };
}
