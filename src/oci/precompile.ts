// Fills the compile cache before a wasm container starts, so its executor only
// deserializes (about 0.5 ms) instead of compiling (tens of ms). The shim compiles,
// never the workload: a cached artifact is native code and must come from us. A hit
// costs a hash and a stat; a miss compiles through the engine's Compiler, which keeps
// the work off the serving thread, and the artifact is written asynchronously.

import { readFileSync } from "node:fs";
import { CompileCache } from "../engines/cache.ts";
import type { Engine } from "../engines/engine.ts";
import type { Prepared } from "./bundle.ts";

const caches = new Map<string, CompileCache>();

export async function precompile(engine: Engine, prepared: Prepared, cacheDir: string, log: (m: string) => void): Promise<void> {
  const compiler = engine.compiler;
  if (!compiler || prepared.kind !== "wasm" || !prepared.moduleHost) return;
  try {
    // Read synchronously (a module is a few MB at most: a millisecond) (docs/ARCHITECTURE.md, "Bun's thread pool").
    const source = new Uint8Array(readFileSync(prepared.moduleHost));
    let cache = caches.get(cacheDir);
    if (!cache) caches.set(cacheDir, (cache = new CompileCache({ dir: cacheDir })));
    // Creates of one module side by side (a pod's replicas) share one compile and one write.
    await cache.ensure(compiler, source);
  } catch (e) {
    // The executor compiles it then, and reports a bad module on the container's stderr.
    log(`precompile ${prepared.module}: ${e instanceof Error ? e.message : String(e)}`);
  }
}
