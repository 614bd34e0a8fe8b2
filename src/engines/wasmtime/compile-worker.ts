// A thread that compiles one module into the compile cache, so that compiling (tens of
// ms, or seconds for a big module) never stalls the thread that serves requests.

import { WasmtimeEngine } from "./engine.ts";

declare const self: Worker;

self.onmessage = (ev: MessageEvent<{ source: Uint8Array; cacheDir: string }>) => {
  try {
    const engine = new WasmtimeEngine({ cacheDir: ev.data.cacheDir });
    try {
      engine.fillCache(ev.data.source);
    } finally {
      engine.close();
    }
    postMessage({});
  } catch (e) {
    postMessage({ error: e instanceof Error ? e.message : String(e) });
  }
};
