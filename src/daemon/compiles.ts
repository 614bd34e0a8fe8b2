// The daemon compiles each distinct module once: concurrent Creates of one module (50 pods
// of one image starting together) wait for the same compile instead of each starting one,
// and the count is kept for ListSandboxes (and the tests that check "compiled once").

import type { Compiler, Engine } from "../engines/engine.ts";

export interface CountingEngine {
  engine: Engine;
  /** Compiles finished or under way since the daemon started. */
  readonly compiled: number;
}

export function countingCompiles(engine: Engine): CountingEngine {
  const inner = engine.compiler;
  let compiled = 0;
  if (!inner) return { engine, compiled: 0 };
  const inFlight = new Map<string, Promise<Uint8Array>>();
  // A Create asks for a module's key and then compiles it: the key of those very bytes is
  // hashed once (in slices, off the event loop's critical path: ../engines/cache.ts).
  const keys = new WeakMap<Uint8Array, Promise<string>>();
  const cacheKey = (source: Uint8Array): Promise<string> => {
    let k = keys.get(source);
    if (!k) keys.set(source, (k = inner.cacheKey(source)));
    return k;
  };
  const compiler: Compiler = {
    cacheKey,
    compile: async (source) => {
      const key = await cacheKey(source);
      let p = inFlight.get(key);
      if (!p) {
        compiled++;
        p = inner.compile(source).finally(() => inFlight.delete(key));
        inFlight.set(key, p);
      }
      return p;
    },
  };
  // The same engine in every other respect (load, canHandle, executor files).
  const wrapped: Engine = Object.assign(Object.create(Object.getPrototypeOf(engine)), engine, { compiler });
  return {
    engine: wrapped,
    get compiled() {
      return compiled;
    },
  };
}
