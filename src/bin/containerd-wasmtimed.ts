// containerd-wasmtimed: the shared-mode daemon with the wasmtime engine (see src/daemon/daemon.ts).
import { DAEMON_VM_ENV } from "../common/vm-env.ts";
import { runDaemon } from "../daemon/daemon.ts";
import { wasmtime } from "../engines/wasmtime/index.ts";
import { reexecWithEnv } from "../linux/reexec.ts";
import { WASMTIMED } from "./wasmtimed.ts";

// First of all: the settings only a fresh process takes (common/vm-env.ts). Same pid after.
const errno = reexecWithEnv(DAEMON_VM_ENV);
if (errno)
  process.stderr.write(`${WASMTIMED.daemon}: cannot re-execute with its memory settings (errno ${errno}); going on without them\n`);

runDaemon({ names: WASMTIMED, engine: wasmtime }).catch((e) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
