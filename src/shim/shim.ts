// The shim as a library: one call makes a complete containerd shim binary of an engine.
//
//   // src/bin/containerd-shim-myengine-v1.ts
//   import { runShim } from "../shim/shim.ts";
//   import { myEngine } from "../engines/myengine/index.ts";
//   runShim({ binaryName: "containerd-shim-myengine-v1", runtime: "io.containerd.myengine.v1", engine: myEngine });
//
// The binary (`bun build --compile` through src/package/build.ts) then serves containerd's
// Task API (start, serve, delete, -info, -v) and is its own executor inside wasm containers;
// every step reaches the engine only through the Engine interface (src/engines/engine.ts).
// Outside this repository the same call comes from the @bunwasi/shim package (src/package).

import { embeddedScript } from "../common/compiled.ts";
import type { Engine } from "../engines/engine.ts";
import { parseShimFlags, type ShimFlags } from "../runtime-v2/flags.ts";
import { COMMAND_LINE_SCRIPT, SERVE_SCRIPT } from "./scripts.ts";

/** What a shim binary is: its names and its engine (the argument of runShim). */
export interface ShimOptions {
  /** The binary's file name: containerd-shim-<name>-v<N> (what containerd looks for on PATH). */
  binaryName: string;
  /** The runtime name containerd is given (`ctr run --runtime io.containerd.<name>.v<N>`). */
  runtime: string;
  /** The engine that runs the modules. Keep its import cheap: start and delete never load it. */
  engine: Engine;
}

/** Run the shim's command line (process.argv) and exit when it is done. */
export function runShim(opts: ShimOptions, argv: string[] = process.argv.slice(2)): void {
  const expected = /^containerd-shim-[a-z0-9_]+-v[0-9]+$/;
  if (!expected.test(opts.binaryName)) throw new Error(`binaryName ${opts.binaryName} is not of the form containerd-shim-<name>-v<N>`);
  // Each process goes straight to its part: the executor (inside every wasm container) and
  // the server (one per pod) live as long as their container, and carry none of the command
  // line's code (start, delete). command-line.ts and serve.ts are build entries of their own,
  // loaded by path: imported here, `bun build` would put them in this file's bundle, whose
  // top-level functions are all created at start-up, their modules evaluated or not
  // (measured: an idle executor and an idle server each 0.3 MiB smaller without them).
  const serveFlags = argv[0] === "executor" ? undefined : serveAction(argv);
  const run =
    argv[0] === "executor"
      ? import("../engines/executor.ts").then(({ executorMain }) => executorMain(argv.slice(1), opts.engine))
      : serveFlags
        ? loadServe().then(({ serve }) => serve(serveFlags, opts.engine, opts.binaryName))
        : loadCommandLine().then(({ main }) => main(argv, opts));
  run.catch((e) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}

/** The flags when argv is `[flags…] serve` (what `start` runs), else undefined: the command line handles the rest, bad flags included. */
function serveAction(argv: string[]): ShimFlags | undefined {
  try {
    const flags = parseShimFlags(argv);
    return flags.rest.length === 1 && flags.rest[0] === "serve" ? flags : undefined;
  } catch {
    return undefined;
  }
}

/** The command line's module, from its own build entry (see runShim). */
function loadCommandLine(): Promise<typeof import("./command-line.ts")> {
  return import(embeddedScript(COMMAND_LINE_SCRIPT.href));
}

/** The server's module, from its own build entry (see runShim). */
function loadServe(): Promise<typeof import("./serve.ts")> {
  return import(embeddedScript(SERVE_SCRIPT.href));
}
