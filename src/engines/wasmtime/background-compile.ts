// Compiles a module on a thread of its own (see compile-worker.ts) and resolves with the
// serialized artifact the compile cache stores.

import { workerScript } from "../../common/compiled.ts";
import { COMPILE_WORKER_SCRIPT } from "./scripts.ts";

/** `httpHost`: compile with bunwasi's wasi:http host library at that path (a wasi:http service). */
export function compileInBackground(source: Uint8Array, httpHost?: string): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const w = new Worker(workerScript(COMPILE_WORKER_SCRIPT));
    w.onmessage = (ev: MessageEvent<{ error?: string; artifact?: Uint8Array }>) => {
      w.terminate();
      if (ev.data.artifact) resolve(ev.data.artifact);
      else reject(new Error(ev.data.error ?? "compile worker answered nothing"));
    };
    w.onerror = (ev) => {
      w.terminate();
      reject(new Error(ev.message));
    };
    w.postMessage({ source, httpHost });
  });
}
