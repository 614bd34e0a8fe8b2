// Normal mode's command line: containerd's `start` and `delete` (and -info, -v) through the
// runtime v2 command line both kinds of shim share (../runtime-v2/shim-cli.ts). `serve` (what
// `start` runs) and `executor` (what the OCI runtime runs inside a wasm container) never come
// here: runShim (./shim.ts) sends them straight to their code. A build entry of its own, so
// that neither the server nor the executor carries it.

import { basename } from "node:path";
import { shimCliMain } from "../runtime-v2/shim-cli.ts";
import type { ShimOptions } from "./shim.ts";
import type { SelfCommand } from "./start.ts";

/**
 * How to run ourselves again, for the server `start` starts: bun plus this script from
 * source; else the binary, under the name we answer to. A binary of several programs
 * (src/bin/bunwasi.ts) picks its program by the name it is started as, and process.execPath
 * is the file itself (a symbolic link resolved), so the name goes in argv[0].
 */
function selfCommand(binaryName: string): SelfCommand {
  const script = process.argv[1];
  if (script && !script.startsWith("/$bunfs/") && script !== process.execPath) return { cmd: [process.execPath, script] };
  return { cmd: [process.execPath], argv0: basename(process.argv0) === binaryName ? process.argv0 : binaryName };
}

export function main(argv: string[], shim: ShimOptions): Promise<never> {
  return shimCliMain(
    {
      binaryName: shim.binaryName,
      runtime: shim.runtime,
      description: `containerd shim for WebAssembly (${shim.engine.name}): one server per pod, each module under runc`,
      // Each action imports only what it uses: this binary starts three or four times per
      // container (start, serve, executor, delete), so its start-up time is container start time.
      start: async (ctx) => (await import("./start.ts")).startServer(ctx, selfCommand(shim.binaryName)),
      delete: async (flags) => (await import("../runtime-v2/delete.ts")).deleteTask(flags),
      // Every container of a pod here runs under runc, a wasm one too (our executor inside it,
      // the module's view built from runc's mounts, src/oci/wasi-view.ts): runc's features hold.
      features: (runtime) => runtime,
    },
    argv,
  );
}
