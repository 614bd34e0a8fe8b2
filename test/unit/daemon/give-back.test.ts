// The daemon's memory give-back (src/daemon/give-back.ts): one pass after a burst of run
// ends, not one per end, and never two closer than the minimum interval; malloc_trim is
// reached on glibc. The schedule runs on a fake clock: no real time passes. A pass collects
// until a collection frees little: what ended stdin relays held (a stream's pending read buffer,
// let go of only as its reader is finalized) is gone after one pass.
import { expect, test } from "bun:test";
import { closeSync, constants, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { giveBack, giveBackWhenQuiet, type PassClock } from "../../../src/daemon/give-back.ts";
import { makeStdinFifo, StdinRelay } from "../../../src/daemon/stdin-relay.ts";
import { mallocTrim, mkfifo } from "../../../src/linux/libc.ts";

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

test("a pass collects again while a collection freed 1 MiB or more, four collections at most", () => {
  const MiB = 2 ** 20;
  const sizes = (...s: number[]) => {
    let i = 0;
    return () => (s[Math.min(i++, s.length - 1)] as number) * MiB;
  };
  // The second frees nothing: two.
  expect(giveBack(sizes(10, 10))).toBe(2);
  // The second frees 80 MiB, the third half a MiB: three.
  expect(giveBack(sizes(100, 20, 19.5))).toBe(3);
  // Each frees more: capped at four.
  expect(giveBack(sizes(100, 80, 60, 40, 20, 0))).toBe(4);
});

test("what ended stdin relays held (each a pending read's 256 KiB buffer) is gone after one pass", async () => {
  const dir = mkdtempSync(join(tmpdir(), "give-back-"));
  const fds: number[] = [];
  const open = (path: string, flags: number) => {
    const fd = openSync(path, flags);
    fds.push(fd);
    return fd;
  };
  try {
    giveBack();
    const start = process.memoryUsage().heapUsed;
    const relays = 40;
    const ends: (() => void)[] = [];
    const overs: Promise<void>[] = [];
    let connected = 0;
    for (let i = 0; i < relays; i++) {
      // containerd's stdin fifo, its writer kept open (no EOF), and the module's end of its own.
      const inPath = join(dir, `in${i}`);
      mkfifo(inPath);
      const source = open(inPath, constants.O_RDONLY | constants.O_NONBLOCK);
      open(inPath, constants.O_WRONLY | constants.O_NONBLOCK);
      const fifo = join(dir, `stdin${i}`);
      await makeStdinFifo(fifo);
      const relay = new StdinRelay(source, fifo);
      let first = true;
      relay.watch(() => {
        if (first) connected++;
        first = false;
      });
      overs.push(relay.run(new Promise<void>((r) => ends.push(r))));
      open(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    }
    // Bounded looks (a hang fails here): every relay has connected and waits on containerd's side.
    for (let i = 0; i < 5000 && connected < relays; i++) await Bun.sleep(1);
    expect(connected).toBe(relays);
    // Each starts its read of containerd's side right after: a buffer of 256 KiB of its own.
    const inReads = relays * 256 * 1024;
    let held = 0;
    for (let i = 0; i < 5000 && held < inReads; i++) {
      await Bun.sleep(1);
      held = process.memoryUsage().heapUsed - start;
    }
    expect(held).toBeGreaterThanOrEqual(inReads);
    for (const end of ends) end();
    await Promise.all(overs);
    giveBack();
    const left = process.memoryUsage().heapUsed - start;
    expect(left < held / 10 ? "freed" : `${left} of ${held} bytes still held`).toBe("freed");
  } finally {
    for (const fd of fds) closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});
