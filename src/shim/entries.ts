// The server's module, loaded from its own build entry: both the binary's dispatch
// (./shim.ts, straight to `serve`) and the command line (./main.ts, `serve` through citty)
// reach it this way, so neither bundles it (see runShim in ./shim.ts for why).

import { embeddedScript } from "../common/compiled.ts";

export function loadServe(): Promise<typeof import("./serve.ts")> {
  return import(embeddedScript(new URL("./serve.ts", import.meta.url).href));
}
