// Fills the compile cache before a wasm container starts, so its executor only
// deserializes (about 0.5 ms) instead of compiling (tens of ms). The shim compiles,
// never the workload: a cached artifact is native code and must come from us. A hit
// costs a hash and a stat; a miss compiles through the engine's Compiler, which keeps
// the work off the serving thread.

import { readFile } from "node:fs/promises";
import { CompileCache } from "../engines/cache.ts";
import type { Engine } from "../engines/engine.ts";
import type { Prepared } from "./bundle.ts";

const caches = new Map<string, CompileCache>();

export async function precompile(engine: Engine, prepared: Prepared, cacheDir: string, log: (m: string) => void): Promise<void> {
  const compiler = engine.compiler;
  if (!compiler || prepared.kind !== "wasm" || !prepared.moduleHost) return;
  try {
    const source = new Uint8Array(await readFile(prepared.moduleHost));
    let cache = caches.get(cacheDir);
    if (!cache) caches.set(cacheDir, (cache = new CompileCache({ dir: cacheDir })));
    const key = compiler.cacheKey(source);
    if (cache.has(key)) return;
    cache.put(key, await compiler.compile(source));
  } catch (e) {
    // The executor compiles it then, and reports a bad module on the container's stderr.
    log(`precompile ${prepared.module}: ${e instanceof Error ? e.message : String(e)}`);
  }
}
