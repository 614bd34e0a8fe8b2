// containerd-wasmtimed: the shared-mode daemon with the wasmtime engine (see src/daemon/daemon.ts).
import { runDaemon } from "../daemon/daemon.ts";
import { wasmtime } from "../engines/wasmtime/index.ts";
import { WASMTIMED } from "./wasmtimed.ts";

runDaemon({ names: WASMTIMED, engine: wasmtime }).catch((e) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
