// The count of run threads the daemon's give-back pass follows (src/engines/wasmtime/run-threads.ts):
// a counted Worker is alive from its count until its `close` event, whether it ended itself or
// was terminated, and the watcher hears each change.
import { expect, test } from "bun:test";
import { RunThreadCount } from "../../../src/engines/wasmtime/run-threads.ts";
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
