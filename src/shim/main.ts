// A shim binary's command line (any engine's: the binary's entry file calls runShim, see
// ./shim.ts). containerd runs it as `[-flags…] start|delete`, and as `-info` and `-v`.
// `serve` (what `start` runs) and `executor` (what the OCI runtime runs inside a wasm
// container) never come here: runShim sends them straight to their code.

// Each action imports only what it uses: this binary starts three or four times per
// container (start, serve, executor, delete), so its start-up time is container start time.

import { defineCommand, runMain } from "citty";
import { SHIM_VERSION } from "../common/constants.ts";
import type { Engine } from "../engines/engine.ts";
import { parseShimFlags, type ShimFlags } from "../runtime-v2/flags.ts";
import { runtimeInfo } from "../runtime-v2/info.ts";
import { loadServe } from "./entries.ts";

/** What a shim binary is: its names and its engine (the argument of runShim, ./shim.ts). */
export interface ShimOptions {
  /** The binary's file name: containerd-shim-<name>-v<N> (what containerd looks for on PATH). */
  binaryName: string;
  /** The runtime name containerd is given (`ctr run --runtime io.containerd.<name>.v<N>`). */
  runtime: string;
  /** The engine that runs the modules. Keep its import cheap: start and delete never load it. */
  engine: Engine;
}

/** How to run ourselves again: the compiled binary alone, or bun plus this script. */
function selfCommand(): string[] {
  const script = process.argv[1];
  return script && !script.startsWith("/$bunfs/") && script !== process.execPath ? [process.execPath, script] : [process.execPath];
}

async function readStdin(): Promise<Uint8Array> {
  if (process.stdin.isTTY) return new Uint8Array();
  return new Uint8Array(await Bun.stdin.arrayBuffer());
}

export async function main(argv: string[], shim: ShimOptions): Promise<void> {
  let flags: ShimFlags;
  try {
    flags = parseShimFlags(argv);
  } catch (e) {
    process.stderr.write(`${String((e as Error).message)}\n`);
    process.exit(2);
  }
  const action = flags.rest[0];
  const commands = {
    start: defineCommand({
      meta: { name: "start", description: "start (or reuse) the shim server for a container; print its address" },
      run: async () => {
        const { start } = await import("./start.ts");
        process.stdout.write(await start(flags, await readStdin(), selfCommand()));
      },
    }),
    delete: defineCommand({
      meta: { name: "delete", description: "clean up after a shim that is gone; print a DeleteResponse" },
      run: async () => {
        const { deleteTask } = await import("../runtime-v2/delete.ts");
        process.stdout.write(await deleteTask(flags));
      },
    }),
    serve: defineCommand({
      meta: { name: "serve", description: "run the shim server (started by `start`)" },
      // By path, from its own build entry (./shim.ts): the bundles of start and delete then
      // do not carry the server.
      run: async () => (await loadServe()).serve(flags, shim.engine),
    }),
  };
  if (action === "v" || action === "version") {
    process.stdout.write(`${shim.binaryName} (${SHIM_VERSION})\n`);
    return;
  }
  if (action === "info") {
    // containerd 2.x runs `shim -info` (runtime options Any on stdin) and parses a
    // containerd.types.RuntimeInfo from stdout: for `ctr plugins inspect-runtime`, for
    // idmap mount checks, and (2.4+) on every Create, looking for a mount annotation,
    // until an answer parses. We have no options, features or annotations to report.
    await readStdin();
    process.stdout.write(await runtimeInfo(shim.runtime));
    return;
  }
  await runMain(
    defineCommand({
      meta: { name: shim.binaryName, version: SHIM_VERSION, description: `containerd shim for WebAssembly (${shim.engine.name})` },
      subCommands: commands,
    }),
    { rawArgs: flags.rest },
  );
}
