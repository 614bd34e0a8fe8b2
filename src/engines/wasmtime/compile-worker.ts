// A thread that compiles one module, so that compiling (tens of ms, or seconds for a big
// module) never stalls the thread that serves requests.

import { WasmtimeEngine } from "./engine.ts";
import { OPT_LEVEL } from "./library.ts";

declare const self: Worker;

self.onmessage = async (ev: MessageEvent<{ source: Uint8Array; httpHost?: string }>) => {
  try {
    if (ev.data.httpHost) {
      // A wasi:http service: its library compiles it (./http/library.ts keys the artifact to it).
      const { compileHttpComponent, httpHost } = await import("./http/ffi.ts");
      postMessage({ artifact: compileHttpComponent(httpHost(ev.data.httpHost), ev.data.source) });
      return;
    }
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
