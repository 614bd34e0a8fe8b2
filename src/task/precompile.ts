// Fills the compile cache before a wasm container starts, so its executor only
// deserializes (about 0.5 ms) instead of compiling (tens of ms). The shim compiles,
// never the workload: a cached artifact is native code and must come from us.

import { readFileSync } from "node:fs";
import { CompileCache } from "../engines/cache.ts";
import { WasmtimeEngine } from "../engines/wasmtime/engine.ts";
import { type Prepared, resolveInRootfs, rootfsOf } from "../oci/bundle.ts";

// Loaded on the first miss only: libwasmtime costs the shim time and memory.
let engine: WasmtimeEngine | null = null;
let cache: CompileCache | null = null;

export function precompile(bundle: string, prepared: Prepared, cacheDir: string, log: (m: string) => void): void {
  if (prepared.kind !== "wasm" || !prepared.module) return;
  try {
    const found = resolveInRootfs(rootfsOf(bundle, prepared.spec), prepared.module);
    if (!found) return;
    const source = new Uint8Array(readFileSync(found.host));
    cache ??= new CompileCache({ dir: cacheDir });
    if (cache.has(WasmtimeEngine.cacheKey(source))) return;
    engine ??= new WasmtimeEngine({ cacheDir });
    engine.fillCache(source);
  } catch (e) {
    // The executor compiles it then, and reports a bad module on the container's stderr.
    log(`precompile ${prepared.module}: ${e instanceof Error ? e.message : String(e)}`);
  }
}
