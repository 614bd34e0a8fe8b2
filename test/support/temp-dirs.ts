// Temporary directories a test process makes and forgets: each is removed once the whole run is
// over (test/preload.ts), not at the end of the file that made it, since a suite's last hook may
// still use one. Bun's test runner emits no process "exit" event, so the preload's afterAll is
// the one place that runs after every file.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made: string[] = [];

/** A new directory under the system's temp dir, removed after the run. */
export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/** Removes every directory tempDir made, with the key file a CompileCache keeps beside its directory (`<dir>.key`). */
export function removeTempDirs(): void {
  for (const d of made.splice(0)) {
    rmSync(d, { recursive: true, force: true });
    rmSync(`${d}.key`, { force: true });
  }
}
