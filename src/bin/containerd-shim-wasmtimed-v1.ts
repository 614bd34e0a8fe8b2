// containerd-shim-wasmtimed-v1: the thin shim of shared mode (`ctr run --runtime io.containerd.wasmtimed.v1`);
// the wasm runs in containerd-wasmtimed. No engine here: this program only talks to the daemon.
// A program of the one binary (./bunwasi.ts, ./programs.ts); run from source, a program of its own.
import { isCompiled } from "../common/compiled.ts";
import { thinShimMain } from "../daemon/thin-shim.ts";
import { WASMTIMED } from "./wasmtimed.ts";

export function main(argv: string[]): void {
  void thinShimMain(WASMTIMED, argv);
}

// Compiled, import.meta.main is true in every embedded entry: only the one binary's dispatch runs main.
if (import.meta.main && !isCompiled) main(process.argv.slice(2));
