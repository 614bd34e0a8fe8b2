// poll_oneoff with fd subscriptions in a run pool's store (src/engines/wasmtime/pool-poll.ts):
// answered as wasmtime's own answers it, on a memory of our own standing in for the guest's.
import { describe, expect, test } from "bun:test";
import type { StdioRole } from "../../../src/engines/wasmtime/file-guard.ts";
import { polledFds, stdioPoll } from "../../../src/engines/wasmtime/pool-poll.ts";

const IN = 1000;
const OUT = 3000;
type Sub = { userdata: bigint } & ({ clock: { id?: number; timeout: bigint; absolute?: boolean } } | { read: number } | { write: number });

function subs(mem: Uint8Array, list: Sub[]): number {
  const v = new DataView(mem.buffer);
  mem.fill(0xee, 0, mem.length);
  list.forEach((s, i) => {
    const at = IN + i * 48;
    mem.fill(0, at, at + 48);
    v.setBigUint64(at, s.userdata, true);
    if ("clock" in s) {
      v.setUint8(at + 8, 0);
      v.setUint32(at + 16, s.clock.id ?? 1, true);
      v.setBigUint64(at + 24, s.clock.timeout, true);
      v.setUint16(at + 40, s.clock.absolute ? 1 : 0, true);
    } else {
      v.setUint8(at + 8, "read" in s ? 1 : 2);
      v.setUint32(at + 16, "read" in s ? s.read : s.write, true);
    }
  });
  return list.length;
}

function events(mem: Uint8Array, count: number) {
  const v = new DataView(mem.buffer);
  return Array.from({ length: count }, (_, i) => {
    const at = OUT + i * 32;
    return {
      userdata: v.getBigUint64(at, true),
      error: v.getUint16(at + 8, true),
      type: v.getUint8(at + 10),
      nbytes: v.getBigUint64(at + 16, true),
      flags: v.getUint16(at + 24, true),
    };
  });
}

const stdio = (fd: number): StdioRole | undefined => (fd === 0 || fd === 1 || fd === 2 ? fd : undefined);

describe("a pooled poll of stdio", () => {
  test("the fds it names, in order; none for clocks only", () => {
    const mem = new Uint8Array(65536);
    const n = subs(mem, [
      { userdata: 1n, read: 0 },
      { userdata: 2n, clock: { timeout: 5n } },
      { userdata: 3n, write: 7 },
    ]);
    expect(polledFds(mem, IN, n)).toEqual([0, 7]);
    expect(polledFds(mem, IN, subs(mem, [{ userdata: 1n, clock: { timeout: 5n } }]))).toEqual([]);
  });

  test("stdin's read and stdout's and stderr's writes: ready at once, nbytes 1, in order; no clock with them, not even one due now", () => {
    const mem = new Uint8Array(65536);
    const n = subs(mem, [
      { userdata: 10n, clock: { timeout: 1_000_000n } },
      { userdata: 11n, write: 2 },
      { userdata: 12n, read: 0 },
      { userdata: 13n, clock: { timeout: 0n } },
      { userdata: 14n, write: 1 },
    ]);
    const r = stdioPoll(mem, IN, OUT, n, stdio);
    expect(r).toEqual({ errno: 0, count: 3 });
    expect(events(mem, 3)).toEqual([
      { userdata: 11n, error: 0, type: 2, nbytes: 1n, flags: 0 },
      { userdata: 12n, error: 0, type: 1, nbytes: 1n, flags: 0 },
      { userdata: 14n, error: 0, type: 2, nbytes: 1n, flags: 0 },
    ]);
  });

  test("a read of stdout, a write of stdin, an fd that is no stdio: EBADF for the whole call, no event written", () => {
    const mem = new Uint8Array(65536);
    for (const bad of [{ read: 1 }, { write: 0 }, { read: 3 }, { write: 9 }] as const) {
      const n = subs(mem, [
        { userdata: 1n, write: 1 },
        { userdata: 2n, ...bad },
      ]);
      expect(stdioPoll(mem, IN, OUT, n, stdio)).toEqual({ errno: 8, count: 0 });
      expect(mem[OUT]).toBe(0xee);
    }
  });

  test("a moved stdio: the role decides, not the number", () => {
    const mem = new Uint8Array(65536);
    const n = subs(mem, [{ userdata: 1n, write: 5 }]);
    expect(stdioPoll(mem, IN, OUT, n, (fd) => (fd === 5 ? 1 : undefined))).toEqual({ errno: 0, count: 1 });
    expect(stdioPoll(mem, IN, OUT, n, stdio)).toEqual({ errno: 8, count: 0 });
  });

  test("a clock of another id, no subscriptions, subscriptions past the memory: EINVAL", () => {
    const mem = new Uint8Array(65536);
    expect(
      stdioPoll(
        mem,
        IN,
        OUT,
        subs(mem, [
          { userdata: 1n, read: 0 },
          { userdata: 2n, clock: { id: 2, timeout: 0n } },
        ]),
        stdio,
      ),
    ).toEqual({
      errno: 28,
      count: 0,
    });
    expect(stdioPoll(mem, IN, OUT, 0, stdio)).toEqual({ errno: 28, count: 0 });
    expect(stdioPoll(mem, 65536 - 10, OUT, 1, stdio)).toEqual({ errno: 28, count: 0 });
  });

  test("what a pooled poll of clocks only does not wait on (an absolute deadline on a CPU-time clock, a subscription of no known kind): EINVAL", () => {
    const mem = new Uint8Array(65536);
    const cpu = subs(mem, [
      { userdata: 1n, clock: { id: 1, timeout: 5n } },
      { userdata: 2n, clock: { id: 2, timeout: 5n, absolute: true } },
    ]);
    expect(stdioPoll(mem, IN, OUT, cpu, stdio)).toEqual({ errno: 28, count: 0 });
    const unknown = subs(mem, [
      { userdata: 1n, clock: { timeout: 5n } },
      { userdata: 2n, clock: { timeout: 5n } },
    ]);
    mem[IN + 48 + 8] = 7;
    expect(stdioPoll(mem, IN, OUT, unknown, stdio)).toEqual({ errno: 28, count: 0 });
    expect(mem[OUT]).toBe(0xee);
  });
});
