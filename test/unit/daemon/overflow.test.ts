// When a daemon near its fd budget starts a successor (src/daemon/overflow.ts), with fakes for
// the fd count, the other daemons and the start.
import { expect, test } from "bun:test";
import { defaultFdBudget, MAX_DAEMONS, Overflow, type OverflowOptions, systemdUnit } from "../../../src/daemon/overflow.ts";
import { RLIM_INFINITY } from "../../../src/linux/libc.ts";

function fake(over: Partial<OverflowOptions> = {}) {
  const state = {
    fds: 0,
    counts: 0,
    live: 1,
    handedOver: false,
    started: [] as number[],
    exit: [] as ((c: number) => void)[],
    logs: [] as string[],
  };
  const o = new Overflow({
    budget: 1000,
    fdsPerContainer: 10,
    countFds: () => {
      state.counts++;
      return state.fds;
    },
    liveDaemons: () => state.live,
    handedOver: () => state.handedOver,
    log: (m) => state.logs.push(m),
    startSuccessor: () => {
      const pid = 100 + state.started.length;
      state.started.push(pid);
      const { promise, resolve } = Promise.withResolvers<number>();
      state.exit.push(resolve);
      return { pid, exited: promise };
    },
    ...over,
  });
  return { o, state };
}

test("the default budget is 90% of the soft limit; none when unlimited", () => {
  expect(defaultFdBudget(20000n, RLIM_INFINITY)).toBe(18000);
  expect(defaultFdBudget(RLIM_INFINITY, RLIM_INFINITY)).toBeUndefined();
  expect(defaultFdBudget(undefined, RLIM_INFINITY)).toBeUndefined();
});

test("below the budget nothing starts, and the fds are counted seldom while far from it", () => {
  const { o, state } = fake();
  state.fds = 200;
  for (let i = 0; i < 100; i++) o.beforeNewSandbox();
  expect(state.started).toEqual([]);
  // (1000 - 200) / 10 / 4 = 20 sandboxes between two counts while the count stays at 200.
  expect(state.counts).toBe(5);
  // Within a quarter container of it: a count at every pod.
  const near = fake();
  near.state.fds = 990;
  for (let i = 0; i < 30; i++) near.o.beforeNewSandbox();
  expect(near.state.counts).toBe(30);
  expect(near.state.started).toEqual([]);
});

test("below the budget a new pod is made at once (no wait)", () => {
  const { o, state } = fake();
  state.fds = 999;
  expect(o.beforeNewSandbox()).toBeUndefined();
});

test("at the budget one successor starts, not one per pod; new pods wait until it takes over; none once handed over", async () => {
  const { o, state } = fake();
  state.fds = 1000;
  const waits = Array.from({ length: 5 }, () => o.beforeNewSandbox());
  expect(state.started).toEqual([100]);
  expect(o.starting).toBe(100);
  for (const w of waits) expect(w).toBeInstanceOf(Promise);
  let done = 0;
  for (const w of waits) void w?.then(() => done++);
  await Bun.sleep(0);
  expect(done).toBe(0);
  // The daemon's HandOver: the waiting pods go on (and the manager forwards them).
  state.handedOver = true;
  o.stopWaiting();
  await Bun.sleep(0);
  expect(done).toBe(5);
  for (let i = 0; i < 5; i++) expect(o.beforeNewSandbox()).toBeUndefined();
  expect(state.started).toEqual([100]);
});

test("a successor that exits before taking over is logged, and the next is tried only after a pause", async () => {
  const { o, state } = fake();
  state.fds = 1000;
  const waiting = o.beforeNewSandbox();
  state.exit[0]?.(1);
  // The pods that waited for it go on (made here).
  await waiting;
  expect(o.starting).toBeUndefined();
  expect(state.logs.some((l) => l.includes("exited (1) before it took over"))).toBe(true);
  expect(o.beforeNewSandbox()).toBeUndefined();
  expect(state.started).toEqual([100]);
});

test(`at most ${MAX_DAEMONS} daemons: the last one keeps the new pods and says so once`, () => {
  const { o, state } = fake();
  state.fds = 5000;
  state.live = MAX_DAEMONS;
  for (let i = 0; i < 3; i++) o.beforeNewSandbox();
  expect(state.started).toEqual([]);
  expect(state.logs.filter((l) => l.includes(`at most ${MAX_DAEMONS}`)).length).toBe(1);
  // Its fds were counted once: the next new pods do not read its long fd list again.
  expect(state.counts).toBe(1);
});

test("a start that throws is logged, and the pod is made here", () => {
  const { o, state } = fake({
    startSuccessor: () => {
      throw new Error("ENOENT /proc/self/exe");
    },
  });
  state.fds = 1000;
  expect(() => o.beforeNewSandbox()).not.toThrow();
  expect(state.logs.some((l) => l.includes("starting a successor daemon: ENOENT"))).toBe(true);
});

test("under systemd (INVOCATION_ID, a .service cgroup) the successor is the unit's reload; elsewhere none", () => {
  const v2 = "0::/system.slice/containerd-wasmtimed.service\n";
  const v1 = "4:memory:/system.slice/containerd-wasmtimed.service\n1:name=systemd:/system.slice/containerd-wasmtimed.service\n0::/\n";
  const id = { INVOCATION_ID: "0123abcd" };
  expect(systemdUnit(v2, id)).toBe("containerd-wasmtimed.service");
  // A hybrid hierarchy: 0::/ names nothing; the name=systemd line does.
  expect(systemdUnit(v1, id)).toBe("containerd-wasmtimed.service");
  expect(systemdUnit(v1.replace("0::/\n", ""), id)).toBe("containerd-wasmtimed.service");
  expect(systemdUnit(v2, {})).toBeUndefined();
  expect(systemdUnit("0::/user.slice/session-3.scope\n", id)).toBeUndefined();
  expect(systemdUnit("0::/\n", id)).toBeUndefined();
});
