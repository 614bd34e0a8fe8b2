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

import { embeddedScript } from "../common/compiled.ts";
import { parseShimFlags, type ShimFlags } from "../runtime-v2/flags.ts";
import type { ShimOptions } from "./main.ts";

export type { Compiler, Engine, Entrypoint, ExecutorNeeds, LoadOptions, RunContext, Runner, RunResult } from "../engines/engine.ts";
export { defineHostFunctions, type HostCaller, type HostFunction, type HostFunctions, withHostFunctions } from "../engines/host.ts";
export type { ShimOptions } from "./main.ts";

/** Run the shim's command line (process.argv) and exit when it is done. */
export function runShim(opts: ShimOptions, argv: string[] = process.argv.slice(2)): void {
  const expected = /^containerd-shim-[a-z0-9_]+-v[0-9]+$/;
  if (!expected.test(opts.binaryName)) throw new Error(`binaryName ${opts.binaryName} is not of the form containerd-shim-<name>-v<N>`);
  // The executor (inside every wasm container) needs nothing of the command line's code, so
  // that code (main.ts: citty, start, delete and the whole server) is a build entry of its
  // own, loaded by path: imported here, `bun build` would put it in this file's bundle, and
  // the bundle's top-level functions are created at start-up whether their module is
  // evaluated or not (measured: an idle executor 0.3 MiB smaller without them).
  // The server (one per pod, long-lived) is one as well, and goes there straight, without
  // the command line's code.
  const serveFlags = argv[0] === "executor" ? undefined : serveAction(argv);
  const run =
    argv[0] === "executor"
      ? import("../engines/executor.ts").then(({ executorMain }) => executorMain(argv.slice(1), opts.engine))
      : serveFlags
        ? loadServe().then(({ serve }) => serve(serveFlags, opts.engine))
        : (import(embeddedScript(new URL("./main.ts", import.meta.url).href)) as Promise<typeof import("./main.ts")>).then(({ main }) =>
            main(argv, opts),
          );
  run.catch((e) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}

/** The flags when argv is `[flags…] serve` (what `start` runs), else undefined: main.ts handles the rest, bad flags included. */
function serveAction(argv: string[]): ShimFlags | undefined {
  try {
    const flags = parseShimFlags(argv);
    return flags.rest.length === 1 && flags.rest[0] === "serve" ? flags : undefined;
  } catch {
    return undefined;
  }
}

/** The server's module, from its own build entry (see runShim). */
export function loadServe(): Promise<typeof import("./serve.ts")> {
  return import(embeddedScript(new URL("./serve.ts", import.meta.url).href));
}
