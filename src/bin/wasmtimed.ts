// The names of shared mode with the wasmtime engine, read by both of its entry files
// (containerd-wasmtimed.ts, containerd-shim-wasmtimed-v1.ts): the daemon's socket, logs and
// messages are named from here.
import type { SharedModeNames } from "../daemon/paths.ts";

export const WASMTIMED: SharedModeNames = {
  daemon: "containerd-wasmtimed",
  thinShim: "containerd-shim-wasmtimed-v1",
  runtime: "io.containerd.wasmtimed.v1",
};
