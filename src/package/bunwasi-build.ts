#!/usr/bin/env bun
// bunwasi-build: the command line of ./build.ts (the package's `bin`).
//
//   bunwasi-build [--no-wasmtime] [--dry-run] --outfile FILE ENTRY [SCRIPT…]
//
// ENTRY is the file with the runShim call; each SCRIPT is embedded too (host-function
// modules, an engine's Worker scripts). --dry-run prints the `bun build` command instead.

import { type BuildOptions, buildCommand, buildShim } from "./build.ts";

const USAGE = "usage: bunwasi-build [--no-wasmtime] [--dry-run] --outfile FILE ENTRY [SCRIPT…]";

function parse(args: string[]): { opts: BuildOptions; dryRun: boolean } {
  let outfile: string | undefined;
  let wasmtime = true;
  let dryRun = false;
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--outfile" || a === "-o") {
      outfile = args[++i];
      if (!outfile) throw new Error(`${a} needs a file`);
    } else if (a.startsWith("--outfile=")) outfile = a.slice("--outfile=".length);
    else if (a === "--no-wasmtime") wasmtime = false;
    else if (a === "--dry-run") dryRun = true;
    else if (a.startsWith("-")) throw new Error(`unknown option ${a}`);
    else files.push(a);
  }
  const [entry, ...embed] = files;
  if (!entry) throw new Error("no entry file");
  if (!outfile) throw new Error("no --outfile");
  return { opts: { entry, outfile, embed, wasmtime }, dryRun };
}

async function main(args: string[]): Promise<void> {
  if (args.includes("-h") || args.includes("--help")) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (e) {
    process.stderr.write(`bunwasi-build: ${e instanceof Error ? e.message : String(e)}\n${USAGE}\n`);
    process.exit(2);
  }
  if (parsed.dryRun) {
    process.stdout.write(`${buildCommand(parsed.opts).join(" ")}\n`);
    return;
  }
  process.stdout.write(`${await buildShim(parsed.opts)}\n`);
}

main(process.argv.slice(2)).catch((e) => {
  process.stderr.write(`bunwasi-build: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
