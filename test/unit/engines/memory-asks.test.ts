// Stats' asks for a fresh memory figure (src/engines/wasmtime/memory-asks.ts): the asks made
// before the bump goes out share it; asks already answered by then cost none.
import { expect, test } from "bun:test";
import { MemoryAsks } from "../../../src/engines/wasmtime/memory-asks.ts";

test("asks made in one turn share one bump; each resolves once it went out", async () => {
  let bumps = 0;
  const asks = new MemoryAsks(() => bumps++);
  const all = Promise.all([1, 2, 3, 4].map(() => asks.bumpSoon(() => false)));
  expect(bumps).toBe(0); // not yet: later asks of this turn may still join
  await all;
  expect(bumps).toBe(1);
});

test("an ask after the bump went out gets a bump of its own (the earlier one came before it asked)", async () => {
  let bumps = 0;
  const asks = new MemoryAsks(() => bumps++);
  await asks.bumpSoon(() => false);
  await asks.bumpSoon(() => false);
  expect(bumps).toBe(2);
});

test("no bump when every ask was answered meanwhile (another bump, a kill or a pause, came first)", async () => {
  let bumps = 0;
  const asks = new MemoryAsks(() => bumps++);
  let answered = false;
  const p = asks.bumpSoon(() => answered);
  answered = true;
  await p;
  expect(bumps).toBe(0);
  // One unanswered ask among answered ones: one bump for all.
  await Promise.all([asks.bumpSoon(() => true), asks.bumpSoon(() => false), asks.bumpSoon(() => true)]);
  expect(bumps).toBe(1);
});
