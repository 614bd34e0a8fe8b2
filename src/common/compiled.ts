// Whether this code runs from a `bun build --compile` binary, and where its Worker
// entries are then. import.meta.url cannot tell (with --bytecode it keeps the source
// path); Bun.main always names the embedded entry, under /$bunfs.

import { existsSync } from "node:fs";

export const isCompiled: boolean = Bun.main.startsWith("/$bunfs/");

/**
 * The script of a Worker, given by its source URL (`new URL("./worker.ts", import.meta.url)`,
 * beside the module that starts it): itself when running from source, its embedded copy when
 * compiled (it must then be an extra entry point of the build, src/package/build.ts).
 */
export function workerScript(script: URL, override?: string): string {
  if (override) return override;
  return embeddedScript(script.href);
}

/**
 * A script given by its source URL or path, as this process can load it: itself from
 * source, its embedded copy (/$bunfs/root/….js) in a compiled binary.
 */
export function embeddedScript(source: string): string {
  if (!isCompiled) return source;
  const path = source.startsWith("file:") ? Bun.fileURLToPath(source) : source;
  // The common folder depends on the build's entries: try every tail of the path.
  const parts = path
    .replace(/\.[cm]?[jt]s$/, "")
    .split("/")
    .filter(Boolean);
  for (let i = 0; i < parts.length; i++) {
    const p = `/$bunfs/root/${parts.slice(i).join("/")}.js`;
    if (existsSync(p)) return p;
  }
  throw new Error(`${source} is not embedded: add it as a \`bun build --compile\` entry point (src/package/build.ts)`);
}
