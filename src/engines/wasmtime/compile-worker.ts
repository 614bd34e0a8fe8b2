// A thread that compiles one module, so that compiling (tens of ms, or seconds for a big
// module) never stalls the thread that serves requests.

import { isWatComponent } from "../engine.ts";
import { WasmtimeEngine } from "./engine.ts";
import { wasmtime, wat2wasm } from "./ffi.ts";
import { findLibwasmtime, OPT_LEVEL } from "./library.ts";

declare const self: Worker;

self.onmessage = async (ev: MessageEvent<{ source: Uint8Array; httpHost?: string }>) => {
  try {
    if (ev.data.httpHost) {
      // A wasi:http service: its library compiles it (./http/library.ts keys the artifact to it).
      // WAT text becomes a binary first, through libwasmtime: the library reads no text.
      const { compileHttpComponent, httpHost } = await import("./http/ffi.ts");
      let source = ev.data.source;
      if (isWatComponent(source)) {
        source = wat2wasm(wasmtime(findLibwasmtime()).lib, source);
      }
      postMessage({ artifact: compileHttpComponent(httpHost(ev.data.httpHost), source) });
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
