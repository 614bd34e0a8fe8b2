// The run thread: runs one wasm module (or component) in this Worker, so the main JS thread
// stays free to notice signals and interrupt it (docs/ARCHITECTURE.md, "Pitfalls"). What it
// runs and how is ./run-module.ts, which the executor calls on its main thread instead
// (WasmtimeEngine.executeHere): there a kill comes from C signal handlers (../kill-signals.ts)
// through the same kill word and epoch.

import { EXIT_ENGINE_ERROR } from "../engine.ts";
import { interruptibleSleep } from "./interruptible.ts";
import type { RunRequest, WorkerMessage } from "./protocol.ts";
import { reportMessage, runRequest, threadId } from "./run-module.ts";

declare const self: Worker;

if (!Bun.isMainThread) {
  const post = (m: WorkerMessage) => self.postMessage(m);
  self.onmessage = async (ev: MessageEvent<RunRequest>) => {
    const req = ev.data;
    // First of all: the container's cpuset is this thread's, and every thread started from it
    // (libwasmtime's) inherits it. A run that cannot be held to it does not run.
    if (req.cpus) {
      const libc = require("../../linux/libc.ts") as typeof import("../../linux/libc.ts");
      const [r, e] = libc.schedSetaffinity(0, req.cpus);
      if (r < 0) {
        const message = `bunwasi: cannot confine the run thread to CPUs ${req.cpus.join(",")}: ${libc.strerror(e)}`;
        reportMessage(req, message);
        post({ type: "exit", code: EXIT_ENGINE_ERROR, message, stats: { instantiateMs: 0, runMs: 0 } });
        return;
      }
    }
    // Before anything touches a file (the module's WASI included): this thread, and the
    // threads libwasmtime starts from it, give up the capabilities over files, so that the
    // view's idmapped mount and the mode bits decide (src/linux/idmap.ts). Not at all rather
    // than with them.
    if (req.dropFileCaps) {
      const libc = require("../../linux/libc.ts") as typeof import("../../linux/libc.ts");
      const [r, e] = libc.dropCapabilitiesThisThread(libc.FILE_CAPABILITIES);
      if (r < 0) {
        const message = `bunwasi: cannot give up the run thread's file capabilities: ${libc.strerror(e)}`;
        reportMessage(req, message);
        post({ type: "exit", code: EXIT_ENGINE_ERROR, message, stats: { instantiateMs: 0, runMs: 0 } });
        return;
      }
    }
    if (req.wantThreadId) {
      const tid = threadId();
      if (tid > 0) post({ type: "thread", tid });
    }
    const kill = new Int32Array(req.kill);
    const result = await runRequest(req, { kill, sleep: (ns) => interruptibleSleep(kill, ns), post });
    post({ type: "exit", code: result.code, ...(result.message ? { message: result.message } : {}), stats: result.stats });
  };
}
