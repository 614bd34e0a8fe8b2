// The order of a run pool's polls, weighted by CPU shares (src/engines/wasmtime/pool-queue.ts).
import { describe, expect, test } from "bun:test";
import { FairQueue } from "../../../src/engines/wasmtime/pool-queue.ts";

type Run = { name: string; vruntime: number; shares: number };
const run = (name: string, shares = 0): Run => ({ name, vruntime: 0, shares });

/** `slices` polls of busy runs, each slice costing `ns` of CPU: who ran, in order. */
function busy(q: FairQueue<Run>, slices: number, ns = 10_000_000): string[] {
  const order: string[] = [];
  for (let i = 0; i < slices; i++) {
    const r = q.take() as Run;
    order.push(r.name);
    FairQueue.charge(r, ns, r.shares);
    q.push(r);
  }
  return order;
}

describe("a pool's fair queue", () => {
  test("equal shares (or none): in turn, first pushed first", () => {
    const q = new FairQueue<Run>();
    for (const r of [run("a"), run("b", 1024), run("c")]) q.push(r);
    expect(busy(q, 6)).toEqual(["a", "b", "c", "a", "b", "c"]);
  });

  test("shares 2048 against 1024 and 512: slices 4 : 2 : 1", () => {
    const q = new FairQueue<Run>();
    for (const r of [run("big", 2048), run("mid", 1024), run("small", 512)]) q.push(r);
    const order = busy(q, 70);
    const count = (n: string) => order.filter((x) => x === n).length;
    expect([count("big"), count("mid"), count("small")]).toEqual([40, 20, 10]);
  });

  test("a run back from a wait starts at the last polled run's time, not at its own", () => {
    const q = new FairQueue<Run>();
    const a = run("a");
    const b = run("b");
    q.push(a);
    busy(q, 10);
    // b waited all along: it does not get ten slices in a row.
    q.push(b);
    expect(busy(q, 4)).toEqual(["b", "a", "b", "a"]);
    expect(q.take()).toBe(b);
    expect(q.take()).toBe(a);
    expect(q.take()).toBeUndefined();
    expect(q.size).toBe(0);
  });
});
