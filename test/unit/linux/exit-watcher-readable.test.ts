// ExitWatcher.watchReadable: other fds (OOM eventfds, inotify) polled by the exits' thread.
// Each readiness is told once, the fd is polled again after the callback consumed it, and a
// stopped watch is told nothing more; exits are still seen alongside.
import { afterEach, expect, test } from "bun:test";
import { ExitWatcher } from "../../../src/linux/exit-watcher.ts";
import { EFD_CLOEXEC, EFD_NONBLOCK, eventfd, eventfdDrain, eventfdSignal, close as libcClose } from "../../../src/linux/libc.ts";

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function setup() {
  const w = new ExitWatcher({ reapIntervalMs: 0 });
  const [fd] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  expect(fd).toBeGreaterThan(0);
  cleanup.push(
    () => w.close(),
    () => void libcClose(fd),
  );
  return { w, fd };
}

test("told once per readiness, polled again after the callback drained it", async () => {
  const { w, fd } = setup();
  const told: number[] = [];
  let next: () => void = () => {};
  const once = () => new Promise<void>((r) => (next = r));
  w.watchReadable(fd, () => {
    eventfdDrain(fd);
    told.push(told.length + 1);
    next();
  });
  let seen = once();
  eventfdSignal(fd);
  await seen;
  expect(told).toEqual([1]);
  seen = once();
  eventfdSignal(fd);
  await seen;
  expect(told).toEqual([1, 2]);
});

test("a stopped watch is told nothing; exits are still seen", async () => {
  const { w, fd } = setup();
  let told = 0;
  const stop = w.watchReadable(fd, () => {
    eventfdDrain(fd);
    told++;
  });
  stop();
  eventfdSignal(fd);
  // An exit watched after the signal: once it is seen, the poll thread has had the eventfd
  // in its set (if it were still watched) at least once.
  const p = Bun.spawn(["true"]);
  const exit = w.watch(p.pid);
  await p.exited;
  await exit;
  expect(told).toBe(0);
});
