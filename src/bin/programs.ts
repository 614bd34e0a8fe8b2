// The programs of the one binary we ship (./bunwasi.ts), as busybox has its applets: each
// product name, the entry file that runs it, and its line in the binary's usage. One Bun
// runtime (~107 MB) for all of them instead of one per program; a process still loads only
// its own program's code (the entries are embedded scripts of their own, imported by path).
//
// The name decides: the binary started as one of these names (a link to it: containerd finds
// a shim by its name on PATH, the daemon's unit starts it by path) runs that program with
// its arguments; under any other name (its own, MULTI_CALL_NAME) the first argument names the
// program: `bunwasi containerd-shim-wasmtime-v1 -v`.

import { basename } from "node:path";
import { SHIM_VERSION } from "../common/constants.ts";

/** One program: its entry (a module exporting `main(argv)`) and what it is, in one line. */
export interface Program {
  entry: URL;
  summary: string;
}

/** The binary's own file name: what install.sh and build-shim.sh call it, the links' target. */
export const MULTI_CALL_NAME = "bunwasi";

export const PROGRAMS: Readonly<Record<string, Program>> = {
  "containerd-shim-wasmtime-v1": {
    entry: new URL("./containerd-shim-wasmtime-v1.ts", import.meta.url),
    summary: "normal mode's shim (io.containerd.wasmtime.v1): a server per pod, each module under runc",
  },
  "containerd-shim-wasmtimed-v1": {
    entry: new URL("./containerd-shim-wasmtimed-v1.ts", import.meta.url),
    summary: "shared mode's thin shim (io.containerd.wasmtimed.v1): asks the daemon for the pod's sandbox",
  },
  "containerd-wasmtimed": {
    entry: new URL("./containerd-wasmtimed.ts", import.meta.url),
    summary: "shared mode's daemon: runs the wasm containers of every pod of the node",
  },
};

/** What to do with a command line: run a program with these arguments, or print and exit. */
export type Choice = { program: string; args: string[] } | { exit: number; stdout?: string; stderr?: string };

const HELP = new Set(["-h", "-help", "--help", "help"]);
const VERSION = new Set(["-v", "-version", "--version"]);

export function usage(name: string): string {
  const width = Math.max(...Object.keys(PROGRAMS).map((p) => p.length));
  const rows = Object.entries(PROGRAMS).map(([p, { summary }]) => `  ${p.padEnd(width)}  ${summary}`);
  return (
    `usage: ${name} PROGRAM [ARGUMENTS…]   (or the binary started as PROGRAM: a link of that name to it)\n` +
    `       ${name} -h | -v\n` +
    `bunwasi's programs, all in this one binary:\n${rows.join("\n")}\n` +
    `PROGRAM -h prints that program's own usage.\n`
  );
}

/** The program `argv0` (the name the binary was started as, a path or not) and `args` ask for. */
export function chooseProgram(argv0: string, args: readonly string[]): Choice {
  const name = basename(argv0);
  if (Object.hasOwn(PROGRAMS, name)) return { program: name, args: [...args] };
  const [first, ...rest] = args;
  if (first !== undefined && Object.hasOwn(PROGRAMS, first)) return { program: first, args: rest };
  if (first !== undefined && HELP.has(first)) return { exit: 0, stdout: usage(name) };
  if (first !== undefined && VERSION.has(first)) return { exit: 0, stdout: `${name} (${SHIM_VERSION})\n` };
  const why = first === undefined ? "no program given" : `no program named ${first}`;
  // Started under a name of none of its programs (a link named wrongly): say so.
  const as = name === MULTI_CALL_NAME ? "" : ` (this is ${MULTI_CALL_NAME}, started as ${name}, which is none of its programs)`;
  return { exit: 2, stderr: `${name}: ${why}${as}\n${usage(name)}` };
}
