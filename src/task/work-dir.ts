// A container's work dir under its namespace's state folder, made when another container's
// delete may be removing that folder at the same moment.

import { mkdirSync } from "node:fs";

/**
 * mkdir -p of a container's work dir. A `shim delete` of the namespace's last container removes
 * the namespace folder once empty (src/runtime-v2/delete.ts), and one that runs between the
 * two levels of this mkdir makes the inner one fail with ENOENT (seen with 4 containers of one
 * namespace cycling at once, and in the daemon's own mkdir of it): the folder is simply made
 * again. Every maker of a work dir goes through here.
 */
export function makeWorkDir(dir: string, mode?: number): void {
  for (let attempt = 1; ; attempt++) {
    try {
      mkdirSync(dir, { recursive: true, ...(mode !== undefined ? { mode } : {}) });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT" || attempt >= 10) throw e;
    }
  }
}
