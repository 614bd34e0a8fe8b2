// The shim as a library: one call makes a complete containerd shim binary of an engine.
//
//   // src/bin/containerd-shim-myengine-v1.ts
//   import { runShim } from "../shim/shim.ts";
//   import { myEngine } from "../engines/myengine/index.ts";
//   runShim({ binaryName: "containerd-shim-myengine-v1", runtime: "io.containerd.myengine.v1", engine: myEngine });
//
// The binary (`bun build --compile`, scripts/build-shim.sh) then serves containerd's Task API
// (start, serve, delete, -info, -v) and is its own executor inside wasm containers; every
// step reaches the engine only through the Engine interface (src/engines/engine.ts).

import type { ShimOptions } from "./main.ts";

export type { Compiler, Engine, Entrypoint, ExecutorNeeds, LoadOptions, RunContext, Runner, RunResult } from "../engines/engine.ts";
export { defineHostFunctions, type HostCaller, type HostFunction, type HostFunctions, withHostFunctions } from "../engines/host.ts";
export type { ShimOptions } from "./main.ts";

/** Run the shim's command line (process.argv) and exit when it is done. */
export function runShim(opts: ShimOptions, argv: string[] = process.argv.slice(2)): void {
  const expected = /^containerd-shim-[a-z0-9_]+-v[0-9]+$/;
  if (!expected.test(opts.binaryName)) throw new Error(`binaryName ${opts.binaryName} is not of the form containerd-shim-<name>-v<N>`);
  // The executor (inside every wasm container) needs nothing of the command line's code:
  // loading main.ts and citty would cost each container's executor memory for its whole life.
  const run =
    argv[0] === "executor"
      ? import("../engines/executor.ts").then(({ executorMain }) => executorMain(argv.slice(1), opts.engine))
      : import("./main.ts").then(({ main }) => main(argv, opts));
  run.catch((e) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
