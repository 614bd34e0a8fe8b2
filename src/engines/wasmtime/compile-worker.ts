// A thread that compiles one module, so that compiling (tens of ms, or seconds for a big
// module) never stalls the thread that serves requests.

import { WasmtimeEngine } from "./engine.ts";
import { OPT_LEVEL } from "./library.ts";

declare const self: Worker;

self.onmessage = (ev: MessageEvent<{ source: Uint8Array }>) => {
  try {
    const engine = new WasmtimeEngine({ optLevel: OPT_LEVEL });
    try {
      postMessage({ artifact: engine.precompile(ev.data.source) });
    } finally {
      engine.close();
    }
  } catch (e) {
    postMessage({ error: e instanceof Error ? e.message : String(e) });
  }
};
