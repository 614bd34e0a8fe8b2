// containerd-shim-customhost-v1: our wasmtime engine plus one host function the guest may
// import, bunwasi:example/host log(ptr, len) (./host.ts). It uses the @bunwasi/shim package as
// a project of your own would (inside this repository the root tsconfig maps the package's
// names to src/package), and scripts/build-shim.sh builds it into build/bin with the package's
// build helper, as `bunwasi-build --outfile … containerd-shim-customhost-v1.ts host.ts` would.
// Run it with `ctr run --runtime io.containerd.customhost.v1 …`.
import { runShim, withHostFunctions } from "@bunwasi/shim";
import { wasmtime } from "@bunwasi/shim/wasmtime";

const engine = withHostFunctions(wasmtime, { name: "customhost", modules: [new URL("./host.ts", import.meta.url)] });

runShim({ binaryName: "containerd-shim-customhost-v1", runtime: "io.containerd.customhost.v1", engine });
