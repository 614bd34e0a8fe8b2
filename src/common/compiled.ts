// Whether this code runs from a `bun build --compile` binary, and where its Worker
// entries are then. import.meta.url cannot tell (with --bytecode it keeps the source
// path); Bun.main always names the embedded entry, under /$bunfs.

import { existsSync } from "node:fs";

export const isCompiled: boolean = Bun.main.startsWith("/$bunfs/");

/**
 * The script of a Worker: `src/<srcPath>.ts` itself when running from source, or its
 * embedded copy when compiled (it must then be an extra entry point of the build; the
 * embedded path is relative to the entries' common folder).
 */
export function workerScript(srcPath: string, override?: string): string {
  if (override) return override;
  const source = new URL(`../${srcPath}.ts`, import.meta.url);
  if (!isCompiled) return source.href;
  // The common folder depends on the build's entries: try every tail of the path.
  const parts = `src/${srcPath}`.split("/");
  for (let i = 0; i < parts.length; i++) {
    const p = `/$bunfs/root/${parts.slice(i).join("/")}.js`;
    if (existsSync(p)) return p;
  }
  throw new Error(`worker ${srcPath} is not embedded: add src/${srcPath}.ts as a \`bun build --compile\` entry point`);
}
