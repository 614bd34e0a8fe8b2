// The daemon's memory give-back (src/daemon/give-back.ts): one pass after a burst of run
// ends, not one per end, and never two closer than the minimum interval; malloc_trim is
// reached on glibc. The schedule runs on a fake clock: no real time passes.
import { expect, test } from "bun:test";
import { giveBack, giveBackWhenQuiet, type PassClock } from "../../../src/daemon/give-back.ts";
import { mallocTrim } from "../../../src/linux/libc.ts";

/** A clock whose time moves only by advance(), firing the timers that fall due, in order. */
function fakeClock() {
  let now = 0;
  let seq = 0;
  const timers = new Map<number, { at: number; fn: () => void }>();
  const clock: PassClock = {
    now: () => now,
    setTimer: (fn, ms) => {
      timers.set(++seq, { at: now + ms, fn });
      return seq;
    },
    clearTimer: (t) => void timers.delete(t as number),
  };
  const advance = (ms: number) => {
    const end = now + ms;
    for (;;) {
      const due = [...timers].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      timers.delete(due[0]);
      now = due[1].at;
      due[1].fn();
    }
    now = end;
  };
  return { clock, advance, pending: () => timers.size };
}

function schedule() {
  const c = fakeClock();
  const passes: number[] = [];
  const ended = giveBackWhenQuiet({ quietMs: 1000, minIntervalMs: 10_000, clock: c.clock, pass: () => passes.push(c.clock.now()) });
  return { ...c, passes, ended };
}

test("a burst of ends gives back once, quietMs after the last one", () => {
  const s = schedule();
  for (let i = 0; i < 5; i++) {
    s.ended();
    s.advance(500);
  }
  expect(s.passes).toEqual([]); // still within 1000 of the last end (at 2000)
  s.advance(10_000);
  expect(s.passes).toEqual([3000]);
  expect(s.pending()).toBe(0);
});

test("ends just over quietMs apart (a busy daemon) give back at most once per minIntervalMs", () => {
  const s = schedule();
  // An end every 1.1 s for a minute: without the interval, that was a pass per end.
  for (let i = 0; i < 55; i++) {
    s.ended();
    s.advance(1100);
  }
  expect(s.passes.length).toBeGreaterThan(1);
  for (let i = 1; i < s.passes.length; i++) expect(s.passes[i]! - s.passes[i - 1]!).toBeGreaterThanOrEqual(10_000);
  // A quiet daemon started with no pass behind it: the first comes quietMs after the first end.
  expect(s.passes[0]).toBe(1000);
});

test("the last quiet point always gets its pass, at the interval's end if one ran just before", () => {
  const s = schedule();
  s.ended();
  s.advance(1000);
  expect(s.passes).toEqual([1000]);
  s.ended(); // 1000: the next pass may not run before 11 000
  s.advance(2000);
  s.ended(); // 3000
  s.advance(60_000);
  expect(s.passes).toEqual([1000, 11_000]);
  // Long after, an end is quiet again after quietMs.
  s.ended(); // 63 000
  s.advance(5000);
  expect(s.passes).toEqual([1000, 11_000, 64_000]);
});

test("malloc_trim is called through glibc, and a full pass runs", () => {
  expect(mallocTrim()).toBe(true); // this host is glibc (Debian)
  expect(() => giveBack()).not.toThrow();
});
