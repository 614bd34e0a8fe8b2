// Where the shim keeps what it owns on the host. Everything of a container is under
// a directory named by namespace and id, so Delete can remove it whole.

import { join } from "node:path";

export const STATE_ROOT = process.env.BUNWASI_STATE_ROOT || "/run/bunwasi";

/** The OCI runtime's --root, one per namespace (as containerd's runc shim does). */
export function runtimeRoot(namespace: string): string {
  return join(STATE_ROOT, "runc", namespace);
}

/** Per-container working files: derived bundle, pid file, runtime log. */
export function containerStateDir(namespace: string): string {
  return join(STATE_ROOT, "state", namespace);
}
