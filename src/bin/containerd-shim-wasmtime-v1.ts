// containerd-shim-wasmtime-v1: the shim with the wasmtime engine (`ctr run --runtime io.containerd.wasmtime.v1`).
// A program of the one binary (./bunwasi.ts, ./programs.ts); run from source, a program of its own.
import { isCompiled } from "../common/compiled.ts";
import { wasmtime } from "../engines/wasmtime/index.ts";
import { runShim } from "../shim/shim.ts";

export function main(argv: string[]): void {
  runShim({ binaryName: "containerd-shim-wasmtime-v1", runtime: "io.containerd.wasmtime.v1", engine: wasmtime }, argv);
}

// Compiled, import.meta.main is true in every embedded entry: only the one binary's dispatch runs main.
if (import.meta.main && !isCompiled) main(process.argv.slice(2));
