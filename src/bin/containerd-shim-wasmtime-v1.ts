// containerd-shim-wasmtime-v1: the shim with the wasmtime engine (`ctr run --runtime io.containerd.wasmtime.v1`).
import { wasmtime } from "../engines/wasmtime/index.ts";
import { runShim } from "../shim/shim.ts";

runShim({ binaryName: "containerd-shim-wasmtime-v1", runtime: "io.containerd.wasmtime.v1", engine: wasmtime });
