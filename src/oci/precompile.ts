// Fills the compile cache before a wasm container starts, so that it only maps the compiled
// module (about 0.5 ms) instead of compiling (tens of ms). The shim compiles, never the
// workload: a cached artifact is native code and must come from us (docs/ARCHITECTURE.md,
// "Compiled code we trust"). A hit costs the source's hash and the entry's check (an HMAC over
// the artifact under the node's key); a miss, or an entry that does not check, compiles
// through the engine's Compiler, which keeps the work off the serving thread, and the artifact
// is written asynchronously.

import { readFileSync } from "node:fs";
import { traced } from "../common/trace.ts";
import { CompileCache } from "../engines/cache.ts";
import type { Engine } from "../engines/engine.ts";
import type { Prepared } from "./bundle.ts";

const caches = new Map<string, CompileCache>();

/**
 * The module's compiled artifact in the cache at `cacheDir` (its key file `<cacheDir>.key`),
 * checked or written now: its path, or undefined when there is none (no compiler, not wasm, or
 * the compile failed: logged, and the run then compiles and reports a bad module itself).
 */
export async function precompile(
  engine: Engine,
  prepared: Pick<Prepared, "kind" | "module" | "moduleHost">,
  cacheDir: string,
  log: (m: string) => void,
): Promise<string | undefined> {
  const compiler = engine.compiler;
  if (!compiler || prepared.kind !== "wasm" || !prepared.moduleHost) return undefined;
  try {
    // Read synchronously (a module is a few MB at most: a millisecond): asynchronous fs calls
    // would start Bun's thread pool, whose threads stay for the server's life (issue 8).
    const source = new Uint8Array(readFileSync(prepared.moduleHost));
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
    if (done.rejected) log(`compile cache: ${done.key}.cwasm not used: ${done.rejected}; compiled again`);
    return done.file;
  } catch (e) {
    log(`precompile ${prepared.module}: ${e instanceof Error ? e.message : String(e)}`);
    return undefined;
  }
}
