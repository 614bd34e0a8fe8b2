// Settings that only the environment a process starts with can give (JavaScriptCore's
// options, Bun's allocator's): a process that must carry them whoever starts it (the
// shared-mode daemon, started by an operator's unit file) replaces itself with a copy of
// itself that has them, once, at the very start: execve(2) keeps the pid, the fds and the
// arguments. A key the environment already sets is left as it is (an operator's choice), and
// with every key set there is nothing to do, so the copy does not exec again.

import { readFileSync } from "node:fs";
import { execve } from "./libc.ts";

/** The entries of `want` that `env` does not set. */
export function missingEnv(want: Readonly<Record<string, string>>, env: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(want).filter(([k]) => env[k] === undefined));
}

/**
 * Re-executes this process with `want` added to its environment, unless it has them all.
 * Returns only if there was nothing to do or execve failed (then with its errno; the process
 * goes on without the settings).
 */
export function reexecWithEnv(want: Readonly<Record<string, string>>): number {
  const add = missingEnv(want, process.env);
  if (Object.keys(add).length === 0) return 0;
  // The arguments as the kernel has them (a compiled Bun binary's process.argv is not that).
  const argv = readFileSync("/proc/self/cmdline", "latin1").split("\0");
  if (argv.at(-1) === "") argv.pop();
  const envp = Object.entries({ ...process.env, ...add }).map(([k, v]) => `${k}=${v ?? ""}`);
  // argv was read byte for byte (latin1); process.env's values are decoded UTF-8.
  const cstrings = (items: string[], encoding: "latin1" | "utf8") => items.map((s) => Buffer.from(`${s}\0`, encoding));
  // Returns only if execve failed.
  return execve("/proc/self/exe", cstrings(argv, "latin1"), cstrings(envp, "utf8"));
}
