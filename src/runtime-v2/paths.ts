// Where the shim keeps what it owns on the host. Everything of a container is under
// a directory named by namespace and id, so Delete can remove it whole. Read from the
// environment when asked, never at import: a process serving many pods builds its
// paths once, in its entry point, and hands them to the Task service.

import { basename, dirname, join } from "node:path";

type Env = Record<string, string | undefined>;

export interface ShimPaths {
  /** Per-container state, in RAM: runtime roots and working files. */
  stateRoot: string;
  /** On disk: the executor directory and the compile cache survive reboots and stay out of RAM. */
  dataRoot: string;
  /**
   * Compiled modules, written only by the shim and the daemon (never by a workload), each with
   * its MAC under the node's key `<compileCacheDir>.key`; no container sees the directory (each
   * gets its own module's one file bound in).
   */
  compileCacheDir: string;
}

export function shimPaths(env: Env = process.env): ShimPaths {
  const dataRoot = env.BUNWASI_EXEC_ROOT || "/var/lib/bunwasi";
  return { stateRoot: env.BUNWASI_STATE_ROOT || "/run/bunwasi", dataRoot, compileCacheDir: join(dataRoot, "cache") };
}

/** The OCI runtime's --root, one per namespace (as containerd's runc shim does). */
export function runtimeRoot(namespace: string, stateRoot = shimPaths().stateRoot): string {
  return join(stateRoot, "runc", namespace);
}

/** Per-container working files of a namespace: derived bundle, pid file, runtime log. */
export function containerStateDir(namespace: string, stateRoot = shimPaths().stateRoot): string {
  return join(stateRoot, "state", namespace);
}

/**
 * In a work dir, who made it (shared mode: the daemon, src/daemon/sweep.ts), so that a clean-up
 * that never ran, or was killed before it renamed the dir aside (./delete.ts), can be finished
 * by whoever knows that owner is dead.
 */
export const WORK_DIR_OWNER_FILE = "daemon.json";

/** Where a work dir goes while process `pid` removes it: beside it, hidden, named by its remover. */
export const removingDir = (workDir: string, pid: number): string => join(dirname(workDir), `.${basename(workDir)}.removing.${pid}`);

/** The remover's pid of a dir named by removingDir; undefined for any other name. */
export function removerOf(name: string): number | undefined {
  const m = /^\..+\.removing\.([1-9][0-9]*)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}
