// The interruptible poll_oneoff (src/engines/wasmtime/interruptible.ts): its reading of WASI
// subscriptions, the events it writes, and, through the real engine, that a kill ends a
// module asleep for ten minutes: the run ends although the engine would wait an hour for
// a module stuck in a host call (killGraceMs), so it is the thread itself that stopped.
import { beforeAll, describe, expect, test } from "bun:test";
import { EVENT_SIZE, SUBSCRIPTION_SIZE } from "../../../src/engines/wasi-abi.ts";
import { WasmtimeEngine } from "../../../src/engines/wasmtime/engine.ts";
import {
  clockOnlyWait,
  type GuestClock,
  guestClocks,
  interruptibleSleep,
  timeLeft,
  writeClockEvents,
} from "../../../src/engines/wasmtime/interruptible.ts";
import { BLOCKED, KILL, newRunWords, PAUSED } from "../../../src/engines/wasmtime/run-atomics.ts";
import { prepare, wasm } from "./helpers.ts";

function subscriptions(subs: { userdata: bigint; tag?: number; timeout?: bigint; flags?: number; clock?: number }[]): Uint8Array {
  const mem = new Uint8Array(16 + subs.length * SUBSCRIPTION_SIZE);
  const v = new DataView(mem.buffer);
  subs.forEach((s, i) => {
    const at = 16 + i * SUBSCRIPTION_SIZE;
    v.setBigUint64(at, s.userdata, true);
    v.setUint8(at + 8, s.tag ?? 0);
    v.setUint32(at + 16, s.clock ?? 1, true); // monotonic unless told
    v.setBigUint64(at + 24, s.timeout ?? 0n, true);
    v.setUint16(at + 40, s.flags ?? 0, true);
  });
  return mem;
}

// A fake of the guest's clocks: realtime at 10^18 ns, monotonic at 5 s; no CPU-time clock.
const clock: GuestClock = (id) => (id === 0 ? 1_000_000_000_000_000_000n : id === 1 ? 5_000_000_000n : undefined);
const ABSTIME = 1;
const MAX_U64 = 2n ** 64n - 1n;

describe("absolute deadlines", () => {
  test("timeLeft: what is left until the deadline, 0 once it passed, a relative timeout as it is", () => {
    expect(timeLeft(7_000n, true, 5_000n)).toBe(2_000n);
    expect(timeLeft(5_000n, true, 5_000n)).toBe(0n);
    expect(timeLeft(1_000n, true, 5_000n)).toBe(0n);
    expect(timeLeft(1_000n, false, 5_000n)).toBe(1_000n);
    // The far future neither wraps nor rounds: 2^64-1 ns less now.
    expect(timeLeft(MAX_U64, true, 1n)).toBe(MAX_U64 - 1n);
    expect(timeLeft(MAX_U64, true, 0n)).toBe(MAX_U64);
  });

  test("a deadline is read on the clock the subscription names", () => {
    const real = subscriptions([{ userdata: 1n, clock: 0, flags: ABSTIME, timeout: 1_000_000_002_000_000_000n }]);
    expect(clockOnlyWait(real, 16, 1, clock)).toEqual({ timeoutNs: 2_000_000_000n, due: [1n] });
    const mono = subscriptions([{ userdata: 2n, clock: 1, flags: ABSTIME, timeout: 8_000_000_000n }]);
    expect(clockOnlyWait(mono, 16, 1, clock)).toEqual({ timeoutNs: 3_000_000_000n, due: [2n] });
  });

  test("a deadline passed is due at once; the far future is waited for whole", () => {
    const past = subscriptions([{ userdata: 3n, clock: 0, flags: ABSTIME, timeout: 1n }]);
    expect(clockOnlyWait(past, 16, 1, clock)).toEqual({ timeoutNs: 0n, due: [3n] });
    const far = subscriptions([{ userdata: 4n, clock: 0, flags: ABSTIME, timeout: MAX_U64 }]);
    expect(clockOnlyWait(far, 16, 1, clock)).toEqual({ timeoutNs: MAX_U64 - 1_000_000_000_000_000_000n, due: [4n] });
  });

  test("absolute and relative together: the earliest, every one due then", () => {
    const mem = subscriptions([
      { userdata: 1n, timeout: 4_000_000_000n },
      { userdata: 2n, clock: 1, flags: ABSTIME, timeout: 9_000_000_000n }, // 4 s from the fake's 5 s
      { userdata: 3n, timeout: 6_000_000_000n },
    ]);
    expect(clockOnlyWait(mem, 16, 3, clock)).toEqual({ timeoutNs: 4_000_000_000n, due: [1n, 2n] });
  });

  test("an absolute deadline on a CPU-time clock is left to wasmtime", () => {
    expect(clockOnlyWait(subscriptions([{ userdata: 1n, clock: 2, flags: ABSTIME, timeout: 1n }]), 16, 1, clock)).toBeUndefined();
  });

  test("the real clocks: realtime is the epoch's, monotonic counts from its base, neither ahead of the host's", () => {
    const base = process.hrtime.bigint();
    const c = guestClocks(base);
    const before = BigInt(Date.now()) * 1_000_000n;
    const real = c(0) as bigint;
    expect(real >= before && real <= BigInt(Date.now()) * 1_000_000n).toBe(true);
    const mono = c(1) as bigint;
    expect(mono >= 0n && mono <= process.hrtime.bigint() - base).toBe(true);
    expect(c(2)).toBeUndefined();
    expect(c(3)).toBeUndefined();
  });
});

describe("poll_oneoff subscriptions", () => {
  test("relative clocks: the earliest timeout, every subscription due then", () => {
    const mem = subscriptions([
      { userdata: 1n, timeout: 5_000_000n },
      { userdata: 2n, timeout: 2_000_000n },
      { userdata: 3n, timeout: 2_000_000n },
    ]);
    expect(clockOnlyWait(mem, 16, 3, clock)).toEqual({ timeoutNs: 2_000_000n, due: [2n, 3n] });
  });

  test("an fd subscription or none at all are left to wasmtime", () => {
    expect(clockOnlyWait(subscriptions([{ userdata: 1n }, { userdata: 2n, tag: 1 }]), 16, 2, clock)).toBeUndefined();
    expect(clockOnlyWait(subscriptions([]), 16, 0, clock)).toBeUndefined();
    // Out of the memory's bounds: not ours to read.
    expect(clockOnlyWait(subscriptions([{ userdata: 1n }]), 16, 2, clock)).toBeUndefined();
  });

  test("events: userdata, success, type clock", () => {
    const mem = new Uint8Array(8 + 2 * EVENT_SIZE).fill(0xff);
    expect(writeClockEvents(mem, 8, [7n, 9n])).toBe(2);
    const v = new DataView(mem.buffer);
    expect(v.getBigUint64(8, true)).toBe(7n);
    expect(v.getUint16(16, true)).toBe(0);
    expect(v.getUint8(18)).toBe(0);
    expect(v.getBigUint64(8 + EVENT_SIZE, true)).toBe(9n);
  });

  test("the sleep ends by itself, or at once when the kill word is set", () => {
    const kill = new Int32Array(newRunWords());
    expect(interruptibleSleep(kill, 1_000_000n)).toBe(false);
    Atomics.store(kill, KILL, 15);
    expect(interruptibleSleep(kill, 3_600_000_000_000n)).toBe(true);
    expect(Atomics.load(kill, BLOCKED)).toBe(0);
  });

  test("a sleep over while paused does not return until resumed; a kill ends that wait", () => {
    const words = new Int32Array(newRunWords());
    Atomics.store(words, PAUSED, 1);
    // Killed during the wait: true, without a resume (a resume would come from another thread).
    const killer = new Worker(
      URL.createObjectURL(
        new Blob([
          `self.onmessage = (e) => { const w = new Int32Array(e.data); setTimeout(() => { Atomics.store(w, ${KILL}, 9); Atomics.notify(w, ${KILL}); Atomics.notify(w, ${PAUSED}); }, 50); };`,
        ]),
      ),
    );
    killer.postMessage(words.buffer);
    const returned = interruptibleSleep(words, 1_000n); // 1 µs: over long before the kill
    killer.terminate();
    expect(returned).toBe(true);
    expect(Atomics.load(words, KILL)).toBe(9); // it waited for the kill, the only way out but a resume
  });
});

describe("a sleeping module and a kill, through the engine", () => {
  let engine: WasmtimeEngine;
  beforeAll(() => {
    // An hour of grace: if run() resolves, the run thread really ended.
    engine = new WasmtimeEngine({ libPath: prepare().libPath, killGraceMs: 3_600_000 });
  });

  for (const [signal, code] of [
    [15, 143],
    [9, 137],
  ] as const) {
    test(`sleep 600 s, killed with ${signal} → ${code}`, async () => {
      const ac = new AbortController();
      const run = engine.run({ modulePath: wasm("wasi-demo-app"), args: ["demo", "sleep", "600"], env: [], signal: ac.signal });
      await Bun.sleep(200);
      ac.abort(signal);
      expect(await run).toBe(code);
    });
  }

  test("a poll on an fd goes to wasmtime's own poll_oneoff: one event, success", async () => {
    // Subscription at 0: userdata 1, tag 1 (fd_read), fd 0 (stdin: /dev/null, always ready).
    // Exits with errno + 10 * nevents.
    const wat = `(module
      (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start") (local $errno i32)
        (i64.store (i32.const 0) (i64.const 1))
        (i32.store8 (i32.const 8) (i32.const 1))
        (i32.store (i32.const 16) (i32.const 0))
        (local.set $errno (call $poll (i32.const 0) (i32.const 128) (i32.const 1) (i32.const 256)))
        (call $exit (i32.add (local.get $errno) (i32.mul (i32.load (i32.const 256)) (i32.const 10))))))`;
    const code = await engine.run({
      module: new TextEncoder().encode(wat),
      args: ["poll"],
      env: [],
      stdin: { kind: "path", path: "/dev/null" },
    });
    expect(code).toBe(10);
  });

  test("a sleep that is not killed still sleeps and returns normally", async () => {
    expect(await engine.run({ modulePath: wasm("wasi-demo-app"), args: ["demo", "sleep", "0.05"], env: [] })).toBe(0);
  });
});

describe("pause and resume of a run (RunContext.onControl)", () => {
  let engine: WasmtimeEngine;
  beforeAll(() => {
    engine = new WasmtimeEngine({ libPath: prepare().libPath, killGraceMs: 3_600_000 });
  });

  // Writes "x" to stdout for ever, one fd_write at a time.
  const writer = `(module
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 0) "x")
    (func (export "_start")
      (i32.store (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (i32.const 1))
      (loop $l (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 32))) (br $l))))`;

  test("a paused module writes nothing until resumed; a kill ends it while paused", async () => {
    const dir = (await import("./helpers.ts")).tmp();
    const out = `${dir}/out`;
    const size = () => Bun.file(out).size;
    let control: import("../../../src/engines/engine.ts").RunControl | undefined;
    const ac = new AbortController();
    const run = engine.run({
      module: new TextEncoder().encode(writer),
      args: ["w"],
      env: [],
      stdout: { kind: "path", path: out },
      signal: ac.signal,
      onControl: (c) => {
        control = c;
      },
    });
    while (size() === 0) await Bun.sleep(10);
    control?.pause();
    await Bun.sleep(50); // a write under way when paused completes
    const paused = size();
    await Bun.sleep(300);
    expect(size()).toBe(paused);
    control?.resume();
    while (size() === paused) await Bun.sleep(10);
    control?.pause();
    ac.abort(9);
    expect(await run).toBe(137);
  });

  test("a paused module asleep takes no step when its sleep is over, only once resumed (as under runc's freezer)", async () => {
    const dir = (await import("./helpers.ts")).tmp();
    const out = `${dir}/out`;
    let control: import("../../../src/engines/engine.ts").RunControl | undefined;
    let ended = false;
    // Sleeps 0.3 s, then prints "exiting" and ends.
    const run = engine
      .run({
        modulePath: wasm("wasi-demo-app"),
        args: ["demo", "sleep", "0.3"],
        env: [],
        stdout: { kind: "path", path: out },
        onControl: (c) => {
          control = c;
        },
      })
      .finally(() => {
        ended = true;
      });
    while (!control?.threadId?.()) await Bun.sleep(5);
    control?.pause();
    await Bun.sleep(1500); // five times the sleep
    expect(ended).toBe(false);
    expect(Bun.file(out).size).toBe(0);
    control?.resume();
    expect(await run).toBe(0);
    expect(await Bun.file(out).text()).toBe("exiting\n");
  });
});

describe("the linear memory of a run (RunControl.memoryBytes, shared mode's Stats)", () => {
  let engine: WasmtimeEngine;
  beforeAll(() => {
    engine = new WasmtimeEngine({ libPath: prepare().libPath, killGraceMs: 3_600_000 });
  });

  for (const [what, args, module] of [
    ["asleep (published on the way into the sleep)", ["demo", "sleep", "600"], "wasi-demo-app"],
    ["running wasm (answered at the epoch callback)", ["busy"], "busy"],
  ] as const) {
    test(`a module ${what}: its memory, in whole wasm pages`, async () => {
      let control: import("../../../src/engines/engine.ts").RunControl | undefined;
      const ac = new AbortController();
      const run = engine.run({ modulePath: wasm(module), args: [...args], env: [], signal: ac.signal, onControl: (c) => (control = c) });
      let bytes: number | undefined;
      // Until the run has instantiated (a bounded number of looks: a hang fails, naming why).
      for (let i = 0; i < 1000 && bytes === undefined; i++) {
        await Bun.sleep(10);
        bytes = await control?.memoryBytes?.();
      }
      if (bytes === undefined) throw new Error(`no memory figure after 1000 looks (control handed over: ${control !== undefined})`);
      expect(bytes).toBeGreaterThan(0);
      expect(bytes % 65536).toBe(0);
      ac.abort(9);
      expect(await run).toBe(137);
    });
  }

  test("concurrent asks of several running modules share one epoch bump (the epoch is every run's)", async () => {
    const controls: import("../../../src/engines/engine.ts").RunControl[] = [];
    const acs = [new AbortController(), new AbortController(), new AbortController()];
    const runs = acs.map((ac) =>
      engine.run({ modulePath: wasm("busy"), args: ["busy"], env: [], signal: ac.signal, onControl: (c) => controls.push(c) }),
    );
    // Until each has instantiated (bounded looks: a hang fails, naming why).
    const figures = async () => Promise.all(controls.map((c) => c.memoryBytes?.()));
    for (let i = 0; i < 1000 && (controls.length < 3 || (await figures()).includes(undefined)); i++) await Bun.sleep(10);
    expect(await figures()).not.toContain(undefined);
    // From here every epoch bump is counted: two asks of each of the three runs, at once.
    let bumps = 0;
    const bump = engine.incrementEpoch;
    engine.incrementEpoch = () => {
      bumps++;
      bump.call(engine);
    };
    try {
      const fresh = await Promise.all(controls.flatMap((c) => [c.memoryBytes?.(), c.memoryBytes?.()]));
      expect(bumps).toBe(1);
      for (const bytes of fresh) expect(bytes! % 65536 === 0 && bytes! > 0).toBe(true);
    } finally {
      engine.incrementEpoch = bump;
    }
    for (const ac of acs) ac.abort(9);
    expect(await Promise.all(runs)).toEqual([137, 137, 137]);
  });

  test("a module that grew to 16 pages and sleeps reports exactly 16 × 64 KiB", async () => {
    // memory.grow by 15 from 1 page, then a 600 s clock-only poll_oneoff (our interruptible sleep).
    const wat = `(module
      (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (memory.grow (i32.const 15)))
        (i64.store (i32.const 0) (i64.const 1))
        (i32.store8 (i32.const 8) (i32.const 0))
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 600000000000))
        (drop (call $poll (i32.const 0) (i32.const 128) (i32.const 1) (i32.const 256)))))`;
    let control: import("../../../src/engines/engine.ts").RunControl | undefined;
    const ac = new AbortController();
    const run = engine.run({
      module: new TextEncoder().encode(wat),
      args: ["g"],
      env: [],
      signal: ac.signal,
      onControl: (c) => (control = c),
    });
    let bytes: number | undefined;
    while (bytes !== 16 * 65536) {
      await Bun.sleep(10);
      bytes = await control?.memoryBytes?.();
      // 1 page right after instantiation, 16 once it grew: nothing else.
      if (bytes !== undefined) expect([65536, 16 * 65536]).toContain(bytes);
    }
    ac.abort(15);
    expect(await run).toBe(143);
  });
});
