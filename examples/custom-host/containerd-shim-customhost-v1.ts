// containerd-shim-customhost-v1: our wasmtime engine plus one host function the guest may
// import, bunwasi:example/host log(ptr, len) (./host.ts). Built into build/bin by
// scripts/build-shim.sh; run with `ctr run --runtime io.containerd.customhost.v1 …`.
import { wasmtime } from "../../src/engines/wasmtime/index.ts";
import { runShim, withHostFunctions } from "../../src/shim/shim.ts";

const engine = withHostFunctions(wasmtime, { name: "customhost", modules: [new URL("./host.ts", import.meta.url)] });

runShim({ binaryName: "containerd-shim-customhost-v1", runtime: "io.containerd.customhost.v1", engine });
