// The package's build helper (@bunwasi/shim/build): makes a shim binary of a user's entry
// file with `bun build --compile`.
//
// A binary of runShim is more than its entry's bundle: runShim loads the command line and the
// server by path, and the wasmtime engine starts its Worker threads on scripts of their own
// (each process then carries only its part, ../shim/shim.ts). A compiled binary has those
// only if they are extra entry points of the build, and so do the user's host-function modules,
// which the engine imports on the thread that runs the guest. This module names the package's
// scripts, so that nobody copies a list of its internal files, and fixes the build's flags.

import { isAbsolute, resolve } from "node:path";
import { WASMTIME_SCRIPTS } from "../engines/wasmtime/scripts.ts";
import { SHIM_SCRIPTS } from "../shim/scripts.ts";

export interface BuildOptions {
  /** The file whose runShim call makes the binary. */
  entry: string;
  /** Where the binary goes. containerd finds it by its file name: containerd-shim-<name>-v<N>. */
  outfile: string;
  /**
   * More scripts the binary loads by path: the host-function modules named in
   * withHostFunctions, an engine's own Worker scripts.
   */
  embed?: string[];
  /** Embed the wasmtime engine's Worker scripts (default true); false for a binary whose engine is not this package's wasmtime. */
  wasmtime?: boolean;
  /** Relative paths are resolved from here (default: process.cwd()). */
  cwd?: string;
}

/**
 * The build's flags. Bytecode: a binary starts several times for every container, and bytecode
 * takes each start from about 30 ms to 10 ms; it also keeps each module's own import.meta.url,
 * by which runShim finds its embedded scripts (without it every module's URL is the entry's).
 * No .env or bunfig.toml autoload: a shim must not take settings from whatever directory
 * containerd starts it in.
 */
export const BUILD_FLAGS: readonly string[] = [
  "--compile",
  "--bytecode",
  "--minify",
  "--no-compile-autoload-dotenv",
  "--no-compile-autoload-bunfig",
];

/** The package's scripts every binary must embed (absolute paths): the shim's, and the wasmtime engine's unless `wasmtime` is false. */
export function packageScripts(opts: { wasmtime?: boolean } = {}): string[] {
  const scripts = [...SHIM_SCRIPTS, ...(opts.wasmtime === false ? [] : WASMTIME_SCRIPTS)];
  return scripts.map((url) => Bun.fileURLToPath(url));
}

/** The command buildShim runs: `bun build` with BUILD_FLAGS, the entry, the embedded scripts and the outfile (bun first). */
export function buildCommand(opts: BuildOptions): string[] {
  const cwd = opts.cwd ?? process.cwd();
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(cwd, p));
  return [
    process.execPath,
    "build",
    ...BUILD_FLAGS,
    abs(opts.entry),
    ...(opts.embed ?? []).map(abs),
    ...packageScripts(opts),
    "--outfile",
    abs(opts.outfile),
  ];
}

/** Builds the binary and resolves with its absolute path; rejects with bun's output if the build fails. */
export async function buildShim(opts: BuildOptions): Promise<string> {
  const cmd = buildCommand(opts);
  const proc = Bun.spawn(cmd, { cwd: opts.cwd ?? process.cwd(), stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`bun build exited with ${code}:\n${out}${err}`);
  return cmd.at(-1)!;
}
