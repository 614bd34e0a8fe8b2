// containerd-shim-wasmtimed-v1: the thin shim of shared mode (`ctr run --runtime io.containerd.wasmtimed.v1`);
// the wasm runs in containerd-wasmtimed. No engine here: this binary only talks to the daemon.
import { thinShimMain } from "../daemon/thin-shim.ts";
import { WASMTIMED } from "./wasmtimed.ts";

void thinShimMain(WASMTIMED, process.argv.slice(2));
