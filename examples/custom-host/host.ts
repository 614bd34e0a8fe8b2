// The host functions of containerd-shim-customhost-v1. This module is loaded on the thread
// that links and runs the guest (inside the executor process), so it must be a module of its
// own: the shim's entry names it, and the build embeds it in the binary (scripts/build-shim.sh).

import { writeSync } from "node:fs";
import { defineHostFunctions } from "@bunwasi/shim";

const PREFIX = "[customhost] ";

export default defineHostFunctions({
  "bunwasi:example/host": {
    // log(ptr, len): the guest's bytes [ptr, ptr+len) as one line on the container's stderr.
    log: {
      params: ["i32", "i32"],
      results: [],
      call(caller, ptr, len) {
        const start = Number(ptr) >>> 0;
        const end = start + (Number(len) >>> 0);
        const memory = caller.memory();
        if (end > memory.length) throw new Error(`[${start}, ${end}) is outside the guest's memory (${memory.length} bytes)`);
        const text = new TextDecoder().decode(memory.subarray(start, end));
        // Synchronous: the run may end (and its thread be stopped) right after this call.
        writeSync(2, `${PREFIX}${text}${text.endsWith("\n") ? "" : "\n"}`);
        return undefined;
      },
    },
  },
});
