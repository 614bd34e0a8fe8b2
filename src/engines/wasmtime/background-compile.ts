// Fills the compile cache from a Worker: see compile-worker.ts.

import { workerScript } from "../../common/compiled.ts";

export function compileInBackground(source: Uint8Array, cacheDir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const w = new Worker(workerScript("engines/wasmtime/compile-worker"));
    w.onmessage = (ev: MessageEvent<{ error?: string }>) => {
      w.terminate();
      if (ev.data.error) reject(new Error(ev.data.error));
      else resolve();
    };
    w.onerror = (ev) => {
      w.terminate();
      reject(new Error(ev.message));
    };
    w.postMessage({ source, cacheDir });
  });
}
