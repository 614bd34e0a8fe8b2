// The daemon counts its compiles, for ListSandboxes (and the tests that check "compiled
// once"). Compiling once is the compile cache's: concurrent Creates of one module (50 pods of
// one image starting together) share one ensure() (../engines/cache.ts), through which
// precompile and artifacts compile, so this compiler is called once per module.

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
  const compiler: Compiler = {
    cacheKey: (source) => inner.cacheKey(source),
    compile: (source) => {
      compiled++;
      return inner.compile(source);
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
