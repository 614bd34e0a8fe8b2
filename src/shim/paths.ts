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

/** On disk: the executor directory and the compile cache survive reboots and stay out of RAM. */
export const DATA_ROOT = process.env.BUNWASI_EXEC_ROOT || "/var/lib/bunwasi";

/** Compiled modules, written only by the shim (never by a workload) and mounted read-only. */
export const COMPILE_CACHE_DIR = join(DATA_ROOT, "cache");
