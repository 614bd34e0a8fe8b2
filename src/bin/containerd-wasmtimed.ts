// containerd-wasmtimed: the shared-mode daemon with the wasmtime engine (see src/daemon/daemon.ts).
// A program of the one binary (./bunwasi.ts, ./programs.ts); run from source, a program of its own.
import { isCompiled } from "../common/compiled.ts";
import { DAEMON_VM_ENV } from "../common/vm-env.ts";
import { runDaemon } from "../daemon/daemon.ts";
import { wasmtime } from "../engines/wasmtime/index.ts";
import { reexecWithEnv } from "../linux/reexec.ts";
import { WASMTIMED } from "./wasmtimed.ts";

export function main(argv: string[]): void {
  // First of all: the settings only a fresh process takes (common/vm-env.ts). Same pid after;
  // the same command line too (the name it was started as included), so the copy comes back here.
  const errno = reexecWithEnv(DAEMON_VM_ENV);
  if (errno)
    process.stderr.write(`${WASMTIMED.daemon}: cannot re-execute with its memory settings (errno ${errno}); going on without them\n`);

  runDaemon({ names: WASMTIMED, engine: wasmtime }, argv).catch((e) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}

// Compiled, import.meta.main is true in every embedded entry: only the one binary's dispatch runs main.
if (import.meta.main && !isCompiled) main(process.argv.slice(2));
