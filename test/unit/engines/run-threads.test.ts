// The count of run threads the daemon's give-back pass follows (src/engines/wasmtime/run-threads.ts):
// a counted Worker is alive from its count until its `close` event, whether it ended itself or
// was terminated, and the watcher hears each change; one whose Linux thread id is known, until
// that thread is gone from /proc/self/task (its `close` comes before its thread's exit).
import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { RunThreadCount, type ThreadExits } from "../../../src/engines/wasmtime/run-threads.ts";
import { until } from "../../support/until.ts";

const script = (body: string) => URL.createObjectURL(new Blob([body]));

test("run threads are counted from their count until they have ended, terminated or not", async () => {
  // A count of its own: the process's also counts the threads of other tests' engines.
  const threads = new RunThreadCount();
  const heard: number[] = [];
  threads.watch((n) => heard.push(n));
  expect(heard).toEqual([0]);
  // One that ends itself once told, one that is terminated while it waits.
  const ends = threads.count(new Worker(script("self.onmessage = () => process.exit(0);")));
  const waits = threads.count(new Worker(script("self.onmessage = () => {};")));
  expect(heard).toEqual([0, 1, 2]);
  ends.postMessage("end");
  await until("the first thread's close", () => heard.length === 4, 30_000);
  expect(heard.at(-1)).toBe(1);
  waits.terminate();
  await until("the second thread's close", () => heard.length === 5, 30_000);
  expect(heard).toEqual([0, 1, 2, 1, 0]);
});

test("a thread whose id is known counts until it is gone from /proc/self/task, not only until its close", async () => {
  // The looks at /proc are this test's: it says when the thread is gone, and runs each look when told.
  let gone = false;
  const looks: (() => void)[] = [];
  const asked: number[] = [];
  const exits: ThreadExits = {
    exists: (tid) => {
      asked.push(tid);
      return !gone;
    },
    later: (fn) => void looks.push(fn),
  };
  const threads = new RunThreadCount(exits);
  const heard: number[] = [];
  threads.watch((n) => heard.push(n));
  const w = threads.count(new Worker(script("self.onmessage = () => {};")));
  threads.threadOf(w, 4242);
  w.terminate();
  await until("the thread's close", () => looks.length === 1, 30_000);
  // Closed, its thread still there: still counted, and looked at again later.
  expect(heard).toEqual([0, 1]);
  expect(asked).toEqual([4242]);
  looks.shift()?.();
  expect(heard).toEqual([0, 1]);
  expect(looks.length).toBe(1);
  gone = true;
  looks.shift()?.();
  expect(heard).toEqual([0, 1, 0]);
  expect(looks.length).toBe(0);
});

test("a real run thread's id: counted until /proc/self/task has it no more", async () => {
  const threads = new RunThreadCount();
  const heard: number[] = [];
  threads.watch((n) => heard.push(n));
  const w = threads.count(
    new Worker(
      script(`const { gettid } = require(${JSON.stringify(require.resolve("../../../src/linux/libc.ts"))}); postMessage(gettid());`),
    ),
  );
  const tid = await new Promise<number>((r) => {
    w.onmessage = (ev) => r(ev.data as number);
  });
  threads.threadOf(w, tid);
  expect(existsSync(`/proc/self/task/${tid}`)).toBe(true);
  w.terminate();
  await until("the thread's end", () => heard.at(-1) === 0, 30_000);
  expect(existsSync(`/proc/self/task/${tid}`)).toBe(false);
});
