// The daemon's memory give-back (src/daemon/give-back.ts): one pass after a burst of run
// ends, not one per end; malloc_trim is reached on glibc.
import { expect, test } from "bun:test";
import { giveBack, giveBackWhenQuiet, mallocTrim } from "../../../src/daemon/give-back.ts";

test("a burst of ends gives back once, after the last one", async () => {
  let passes = 0;
  const ended = giveBackWhenQuiet(50, () => passes++);
  for (let i = 0; i < 5; i++) {
    ended();
    await Bun.sleep(10);
  }
  expect(passes).toBe(0); // still within 50 ms of the last end
  await Bun.sleep(120);
  expect(passes).toBe(1);
  ended();
  await Bun.sleep(120);
  expect(passes).toBe(2);
});

test("malloc_trim is called through glibc, and a full pass runs", () => {
  expect(mallocTrim()).toBe(true); // this host is glibc (Debian)
  expect(() => giveBack()).not.toThrow();
});
