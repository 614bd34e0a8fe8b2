// Fills the compile cache before a wasm container starts, so its executor only
// deserializes (about 0.5 ms) instead of compiling (tens of ms). The shim compiles,
// never the workload: a cached artifact is native code and must come from us. A hit
// costs a hash and a stat; a miss compiles on a thread of its own.

import { readFileSync } from "node:fs";
import { CompileCache } from "../engines/cache.ts";
import { compileInBackground } from "../engines/wasmtime/background-compile.ts";
import { WasmtimeEngine } from "../engines/wasmtime/engine.ts";
import { type Prepared, resolveInRootfs, rootfsOf } from "../oci/bundle.ts";

let cache: CompileCache | null = null;

export async function precompile(bundle: string, prepared: Prepared, cacheDir: string, log: (m: string) => void): Promise<void> {
  if (prepared.kind !== "wasm" || !prepared.module) return;
  try {
    const found = resolveInRootfs(rootfsOf(bundle, prepared.spec), prepared.module);
    if (!found) return; // on a volume: the executor compiles it
    const source = new Uint8Array(readFileSync(found.host));
    cache ??= new CompileCache({ dir: cacheDir });
    if (cache.has(WasmtimeEngine.cacheKey(source))) return;
    await compileInBackground(source, cacheDir);
  } catch (e) {
    // The executor compiles it then, and reports a bad module on the container's stderr.
    log(`precompile ${prepared.module}: ${e instanceof Error ? e.message : String(e)}`);
  }
}
