// The host functions the guest may import. Loaded on the thread that runs the guest.
import { defineHostFunctions } from "@bunwasi/shim";

export default defineHostFunctions({
  "example:shout": {
    // upper(ptr, len) -> count: upper-cases the guest's ASCII letters in [ptr, ptr+len), in place.
    upper: {
      params: ["i32", "i32"],
      results: ["i32"],
      call(caller, ptr, len) {
        const memory = caller.memory(); // the guest's live memory: writes change it
        const start = Number(ptr);
        const end = start + Number(len);
        if (end > memory.length) throw new Error("out of bounds"); // traps the guest
        let count = 0;
        for (let i = start; i < end; i++) {
          const c = memory[i]!;
          if (c >= 0x61 && c <= 0x7a) {
            memory[i] = c - 0x20;
            count++;
          }
        }
        return count;
      },
    },
  },
});
