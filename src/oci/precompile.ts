// Fills the compile cache before a wasm container starts, so that it only maps the compiled
// module (about 0.5 ms) instead of compiling (tens of ms). The shim compiles, never the
// workload: a cached artifact is native code and must come from us (docs/ARCHITECTURE.md,
// "Compiled code we trust"). A hit costs the source's hash and the entry's check (an HMAC over
// the artifact under the node's key); a miss, or an entry that does not check, compiles
// through the engine's Compiler, which keeps the work off the serving thread, and the artifact
// is written asynchronously.

import { dirname, relative } from "node:path";
import { traced } from "../common/trace.ts";
import { CompileCache, type Filled } from "../engines/cache.ts";
import type { Engine } from "../engines/engine.ts";
import { readModuleSync } from "../engines/module-file.ts";
import type { Prepared } from "./bundle.ts";

const caches = new Map<string, CompileCache>();

/**
 * Reads the module `path` inside `root` (../engines/module-file.ts: never through a link out of
 * it, a regular file within the size cap). `shown` names it in errors.
 */
export type ModuleReader = (root: string, path: string, shown: string) => Uint8Array | Promise<Uint8Array>;

/**
 * The module's compiled artifact in the cache at `cacheDir` (its key file `<cacheDir>.key`),
 * checked or written now: its path, or undefined when there is none (no compiler, not wasm, or
 * the compile failed: logged, and the run then compiles and reports a bad module itself).
 * `read` defaults to a synchronous read (a module is a few MB at most: a millisecond), which a
 * shim server wants: asynchronous fs calls would start Bun's thread pool, whose threads stay for
 * the server's life. The daemon, busy rather than idle, reads off its main thread.
 */
export async function precompile(
  engine: Engine,
  prepared: Pick<Prepared, "kind" | "module" | "moduleHost" | "moduleRoot">,
  cacheDir: string,
  log: (m: string) => void,
  read: ModuleReader = readModuleSync,
  /** Told where the entry came from: the cache (a hit), or compiled or fetched now (the daemon counts hits). */
  onEnsured?: (from: Filled) => void,
): Promise<string | undefined> {
  const compiler = engine.compiler;
  if (!compiler || prepared.kind !== "wasm" || !prepared.moduleHost) return undefined;
  try {
    const root = prepared.moduleRoot ?? dirname(prepared.moduleHost);
    const source = await read(root, relative(root, prepared.moduleHost), prepared.module ?? prepared.moduleHost);
    let cache = caches.get(cacheDir);
    if (!cache) caches.set(cacheDir, (cache = new CompileCache({ dir: cacheDir })));
    // Creates of one module side by side (a pod's replicas) share one compile and one write.
    const c = cache;
    const done = await traced("compile", async (span) => {
      const out = await c.ensure(compiler, source);
      // The step's name in a trace says which it was: the work of a compile or a hit.
      if (out.from === "cache") span.setName("compile cache hit");
      span.set("bunwasi.compile.from", out.from);
      span.set("bunwasi.compile.key", out.key);
      return out;
    });
    onEnsured?.(done.from);
    if (done.rejected) log(`compile cache: ${done.key}.cwasm not used: ${done.rejected}; compiled again`);
    return done.file;
  } catch (e) {
    log(`precompile ${prepared.module}: ${e instanceof Error ? e.message : String(e)}`);
    return undefined;
  }
}
