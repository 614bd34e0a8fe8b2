// containerd-shim-shout-v1: the wasmtime engine plus one host function of our own.
import { runShim, withHostFunctions } from "@bunwasi/shim";
import { wasmtime } from "@bunwasi/shim/wasmtime";

const engine = withHostFunctions(wasmtime, { name: "shout", modules: [new URL("./host.ts", import.meta.url)] });

runShim({ binaryName: "containerd-shim-shout-v1", runtime: "io.containerd.shout.v1", engine });
