// The daemon's in-process instance (src/daemon/inproc-runtime.ts) with a fake Runner: what
// it hands the engine from the RunPlan (module, argv, env, the WASI view it mounts, limits,
// stdio; real mounts, so root), how each Task call maps
// onto a run (create holds, start runs, kill aborts or ends a created one, delete cleans
// up), the stdin relay (data and EOF reach the module's fifo, a kill ends a blocked read),
// a terminal (a pty of its own: the master to the console, the slave the module's output and
// its stdin's source; a hangup is SIGHUP); its limits (the daemon's
// default memory limit, Update of the CPU limits and of the memory limit before start). Exec:
// planned by the container's rules (a module, #export, WAT), run on Start as a run of its own
// in the container's view with the container's limits and its own stdio; killed, deleted,
// ended with its container's Delete; with a terminal of its own; a native program, another user refused.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import {
  closeSync,
  constants,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InProcessInstance, MAX_EXEC_RUNS, threadCpu } from "../../../src/daemon/inproc-runtime.ts";
import { MemoryLimitBelowUsage, type RunContext, type RunControl, type Runner, type RunResult } from "../../../src/engines/engine.ts";
import type { RunPlan } from "../../../src/engines/run-plan.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { formatCpuList } from "../../../src/linux/cpuset.ts";
import { schedGetaffinity, setNonBlocking } from "../../../src/linux/libc.ts";
import { unmountView, viewDir } from "../../../src/oci/wasi-view.ts";
import type { InstanceExec, ProcessConsole, ProcessIo } from "../../../src/task/instance.ts";
import { UndoStack } from "../../../src/task/undo.ts";
import { fdsOn, outputFifo, stdinFifo } from "../../support/fifos.ts";
import { until } from "../../support/until.ts";

/** A Runner whose runs end when told to, or when aborted (128+signal), like the real one. */
class FakeRunner implements Runner {
  runs: { ctx: RunContext; end: (code: number) => void }[] = [];
  /** Runs that do not notice an abort (a module that reaches its own exit first). */
  ignoreAbort = false;
  run(ctx: RunContext): Promise<RunResult> {
    return new Promise((resolve) => {
      const end = (code: number) => resolve({ code, stats: {} });
      this.runs.push({ ctx, end });
      if (!this.ignoreAbort) ctx.signal?.addEventListener("abort", () => end(128 + Number(ctx.signal?.reason ?? 9)), { once: true });
    });
  }
  close(): void {}
}

let dir: string;
let runner: FakeRunner;
let stdio: [number, number, number];
let stdinWriter: number;
/** The instances a test created, deleted after it. */
const live: InProcessInstance[] = [];

/** A plan for the rootfs made in `dir` (created mounts its view: real mounts, root). */
const plan = (over: Partial<RunPlan> = {}): RunPlan => ({
  module: { host: join(dir, "rootfs/app.wasm"), path: "/app.wasm" },
  args: ["/app.wasm", "a b"],
  env: ["K=V"],
  cwd: "/",
  limits: { memoryBytes: 1 << 20 },
  view: { root: join(dir, "rootfs"), readOnly: true, volumes: [] },
  user: { uid: 0, gid: 0, additionalGids: [] },
  ...over,
});

/** Mount points at or under `path` in this process's mount namespace. */
function mountsUnder(path: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((p) => p === path || p.startsWith(`${path}/`));
}

/** Container `id` created from plan `p`; `undo` gets the undo of what create made. */
async function created(
  id = "c1",
  p = plan(),
  o: { undo?: UndoStack; io?: ProcessIo; warm?: () => Promise<void>; defaultMemoryBytes?: number; bundle?: string } = {},
): Promise<InProcessInstance> {
  const work = join(dir, id);
  mkdirSync(work, { recursive: true });
  const req = {
    namespace: "default",
    id,
    bundle: o.bundle ?? "/bundle",
    workDir: work,
    io: o.io ?? { stdio, console: null },
    runtimeOptions: null,
    undo: o.undo ?? new UndoStack(),
    onOom: () => {},
  };
  const inst = await InProcessInstance.create(p, req, {
    runner: async () => runner,
    pid: 4242,
    engine: wasmtime,
    ...(o.warm ? { warm: o.warm } : {}),
    ...(o.defaultMemoryBytes !== undefined ? { defaultMemoryBytes: o.defaultMemoryBytes } : {}),
  });
  live.push(inst);
  return inst;
}

/**
 * A process's stdio as the Task service opens it, named `${base}in`, `out`, `err` in `dir`:
 * containerd's stdin fifo (our read end; its write end, `writer`, kept) and files for the output.
 */
function taskStdio(base: string): { stdio: [number, number, number]; writer: number } {
  const stdin = stdinFifo(join(dir, `${base}in`));
  return { stdio: [stdin.reader, openSync(join(dir, `${base}out`), "w"), openSync(join(dir, `${base}err`), "w")], writer: stdin.writer };
}

/**
 * containerd's output fifo `name` in `dir` as the container's stdout (1) or stderr (2), in
 * place of its file: containerd's read end, and the end the runtime gets.
 */
function outputFifoAs(slot: 1 | 2, name: string): { reader: number; writer: number } {
  const f = outputFifo(join(dir, name));
  closeSync(stdio[slot]);
  stdio[slot] = f.writer;
  return f;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "inproc-"));
  runner = new FakeRunner();
  // A fifo as containerd's stdin: we keep its write end.
  ({ stdio, writer: stdinWriter } = taskStdio(""));
  mkdirSync(join(dir, "rootfs"));
  writeFileSync(join(dir, "rootfs/app.wasm"), "");
});

afterEach(async () => {
  // What a test left (a run it ended without Delete) is deleted here: its fds close when its
  // relay lets go, which must not happen during the next test's fd count.
  for (const inst of live.splice(0)) await inst.delete(true).catch(() => {});
  for (const fd of [...stdio, stdinWriter]) {
    if (fd < 0) continue;
    try {
      closeSync(fd);
    } catch {}
  }
  // A test that ends without a delete leaves its view mounted: never remove through it.
  for (const id of readdirSync(dir)) unmountView(viewDir(join(dir, id)));
  expect(mountsUnder(dir)).toEqual([]);
  rmSync(dir, { recursive: true, force: true });
});

describe("InProcessInstance", () => {
  test("create holds the plan and reports the daemon's pid; start runs it with the plan", async () => {
    const inst = await created();
    expect(inst.pid).toBe(4242);
    expect(runner.runs).toHaveLength(0);
    await inst.start();
    await Bun.sleep(0);
    expect(runner.runs).toHaveLength(1);
    const ctx = runner.runs[0]!.ctx;
    // The module by an fd of ours, opened inside the view the create mounted as its "/"
    // (src/engines/module-file.ts); that view read-only by the mount, as normal mode's: the
    // kernel says EROFS, not the WASI layer.
    expect(ctx.modulePath).toMatch(/^\/proc\/self\/fd\/\d+$/);
    expect(readlinkSync(ctx.modulePath as string)).toBe(join(dir, "c1", "wasi-root", "app.wasm"));
    expect(ctx.args).toEqual(["/app.wasm", "a b"]);
    expect(ctx.env).toEqual(["K=V"]);
    expect(ctx.cwd).toBe("/");
    expect(ctx.rootDir).toBe(join(dir, "c1", "wasi-root"));
    expect(ctx.rootReadOnly).toBeUndefined();
    expect(ctx.preopens).toBeUndefined();
    expect(ctx.memoryLimitBytes).toBe(1 << 20);
    // stdout/stderr: our own copies of the fifos; stdin: the relay's fifo.
    expect(ctx.stdout?.kind).toBe("fd");
    expect(ctx.stdin).toEqual({ kind: "path", path: join(dir, "c1", "stdin") });
    expect(await inst.pids()).toEqual([4242]);
    runner.runs[0]!.end(3);
    expect((await inst.exited).status).toBe(3);
    expect(await inst.pids()).toEqual([]);
  });

  test("create mounts the plan's view under the work dir, the undo takes it down; the rootfs is untouched", async () => {
    const vol = join(dir, "vol");
    mkdirSync(vol);
    writeFileSync(join(vol, "v"), "volume");
    const undo = new UndoStack();
    const inst = await created(
      "c1",
      plan({ view: { root: join(dir, "rootfs"), readOnly: true, volumes: [{ source: vol, destination: "/data", readOnly: true }] } }),
      { undo },
    );
    const view = join(dir, "c1", "wasi-root");
    expect(mountsUnder(view)).toEqual([view, join(view, "data")]);
    expect(readFileSync(join(view, "data/v"), "utf8")).toBe("volume");
    expect(() => writeFileSync(join(view, "new"), "")).toThrow("EROFS");
    await inst.start();
    await Bun.sleep(0);
    runner.runs[0]!.end(0);
    await inst.exited;
    expect(await undo.run()).toEqual([]);
    expect(mountsUnder(view)).toEqual([]);
    expect(readdirSync(join(dir, "rootfs")).sort()).toEqual(["app.wasm", "data"]);
  });

  test("a view that cannot be mounted fails the create, holding nothing", async () => {
    const before = readdirSync("/proc/self/fd").length;
    const bad = plan({ view: { root: join(dir, "no-such-rootfs"), readOnly: false, volumes: [] } });
    await expect(created("c1", bad)).rejects.toThrow("no-such-rootfs");
    expect(readdirSync("/proc/self/fd").length).toBe(before);
    expect(mountsUnder(join(dir, "c1"))).toEqual([]);
  });

  test("kill of a running module aborts its run with the signal: 128+s", async () => {
    const inst = await created();
    await inst.start();
    await inst.kill(15, false);
    expect((await inst.exited).status).toBe(143);
    await expect(inst.kill(9, false)).rejects.toThrow("already finished");
  });

  test("a module killed while running that reaches its own exit first still ends with the signal", async () => {
    runner.ignoreAbort = true;
    const inst = await created();
    await inst.start();
    await Bun.sleep(0);
    await inst.kill(15, false);
    runner.runs[0]!.end(0); // e.g. cat, given EOF by the kill
    expect((await inst.exited).status).toBe(143);
  });

  test("kill of a created, never started container ends it with the signal; nothing ever runs", async () => {
    const inst = await created();
    await inst.kill(9, false);
    expect((await inst.exited).status).toBe(137);
    expect(runner.runs).toHaveLength(0);
    await expect(inst.start()).rejects.toThrow("has exited");
  });

  test("delete (force) of a running module kills it and closes its fds; a second delete is fine", async () => {
    const before = readdirSync("/proc/self/fd").length;
    const inst = await created();
    expect(readdirSync("/proc/self/fd").length).toBe(before + 3);
    await inst.start();
    await expect(inst.delete(false)).rejects.toThrow("is running");
    await inst.delete(true);
    expect((await inst.exited).status).toBe(137);
    expect(readdirSync("/proc/self/fd").length).toBe(before);
    await inst.delete(true); // the undo of a Create deletes it again: nothing left to do
    await inst.delete(false);
    expect(readdirSync("/proc/self/fd").length).toBe(before);
  });

  test("the module's output ends with its run, before the exit is reported and before any Delete (containerd's reader sees EOF)", async () => {
    // containerd's side of stdout and stderr: fifos it reads; the Task service opens them
    // read-write and closes its own fds once the runtime has its copies, as after a create.
    const { reader: outReader, writer: out } = outputFifoAs(1, "fifo-out");
    const { reader: errReader, writer: err } = outputFifoAs(2, "fifo-err");
    const readers = [outReader, errReader];
    const readNow = (fd: number) => {
      const buf = Buffer.alloc(64);
      try {
        return buf.subarray(0, readSync(fd, buf)).toString();
      } catch (e) {
        return (e as NodeJS.ErrnoException).code; // EAGAIN: a writer is still there
      }
    };
    try {
      const inst = await created();
      for (const fd of [out, err]) closeSync(fd);
      stdio = [stdio[0], -1, -1];
      await inst.start();
      await Bun.sleep(0);
      const run = runner.runs[0]!;
      writeSync((run.ctx.stdout as { fd: number }).fd, "hello\n");
      // Running: the output is open (our copies are its writers).
      expect(readers.map(readNow)).toEqual(["hello\n", "EAGAIN"]);
      run.end(0);
      expect((await inst.exited).status).toBe(0);
      // Exited and not deleted: what was written was read, and then the end of both.
      expect(readers.map(readNow)).toEqual(["", ""]);
      await inst.delete(false);
    } finally {
      for (const fd of readers) closeSync(fd);
    }
  });

  test("a created, never started container killed: its stdio is closed at once, before any Delete", async () => {
    const { reader, writer: out } = outputFifoAs(1, "fifo-out");
    try {
      const inst = await created();
      closeSync(out);
      stdio = [stdio[0], -1, stdio[2]];
      const buf = Buffer.alloc(8);
      expect(() => readSync(reader, buf)).toThrow("EAGAIN");
      await inst.kill(9, true);
      expect(readSync(reader, buf)).toBe(0); // EOF
      await inst.delete(false);
    } finally {
      closeSync(reader);
    }
  });

  test("pause and resume go to the engine's control of the run; a pause before it is handed over is kept", async () => {
    const seen: string[] = [];
    const inst = await created();
    await expect(inst.pause()).rejects.toThrow("not running");
    await inst.start();
    await inst.pause(); // the fake run has not handed over its control yet
    runner.runs[0]!.ctx.onControl?.({ pause: () => seen.push("pause"), resume: () => seen.push("resume") });
    await inst.resume();
    await inst.pause();
    expect(seen).toEqual(["pause", "resume", "pause"]);
  });

  test("a spec without a memory limit gets the daemon's default: the run's limit, Stats' limit", async () => {
    const inst = await created("c1", plan({ limits: {} }), { defaultMemoryBytes: 48 << 20 });
    await inst.start();
    expect(runner.runs[0]!.ctx.memoryLimitBytes).toBe(48 << 20);
    runner.runs[0]!.ctx.onControl?.({ pause() {}, resume() {}, memoryBytes: async () => 65536 });
    expect((await inst.stats()).memory?.usage?.limit).toBe(48 << 20);
    // The spec's own limit wins; without a default there is none.
    const own = await created("c2", plan({ limits: { memoryBytes: 8 << 20 } }), { defaultMemoryBytes: 48 << 20 });
    await own.start();
    expect(runner.runs[1]!.ctx.memoryLimitBytes).toBe(8 << 20);
    const none = await created("c3", plan({ limits: {} }));
    await none.start();
    expect(runner.runs[2]!.ctx.memoryLimitBytes).toBeUndefined();
    for (const i of [inst, own, none]) await i.delete(true);
  });

  test("Update before start: the run starts with the new limits (unset fields keep theirs; 0 memory is the default)", async () => {
    const inst = await created("c1", plan({ limits: { memoryBytes: 64 << 20, cpu: { shares: 512 } } }), { defaultMemoryBytes: 48 << 20 });
    await inst.update(JSON.stringify({ memory: { limit: 0 }, cpu: { quota: 20_000, period: 50_000 } }));
    await inst.start();
    expect(runner.runs[0]!.ctx.memoryLimitBytes).toBe(48 << 20);
    expect(runner.runs[0]!.ctx.cpu).toEqual({ shares: 512, quota: 20_000, period: 50_000 });
    await inst.delete(true);
  });

  test("Update while it runs: the CPU limits go to the engine's control, kept until the engine hands it over", async () => {
    const inst = await created("c1", plan({ limits: { cpu: { quota: 10_000, period: 100_000 } } }));
    await inst.start();
    expect(runner.runs[0]!.ctx.cpu).toEqual({ quota: 10_000, period: 100_000 });
    await inst.update(JSON.stringify({ cpu: { quota: 30_000 } })); // no control yet
    const set: unknown[] = [];
    runner.runs[0]!.ctx.onControl?.({ pause() {}, resume() {}, setCpu: (c) => set.push(c) });
    expect(set).toEqual([{ quota: 30_000, period: 100_000 }]);
    await inst.update(JSON.stringify({ cpu: { quota: -1, shares: 2 } }));
    expect(set).toEqual([
      { quota: 30_000, period: 100_000 },
      { quota: -1, period: 100_000, shares: 2 },
    ]);
    await inst.delete(true);
  });

  test("stats: the engine's CPU throttling in the cgroup's cpu.stat shape", async () => {
    const inst = await created();
    await inst.start();
    runner.runs[0]!.ctx.onControl?.({
      pause() {},
      resume() {},
      threadId: () => process.pid,
      cpuThrottling: () => ({ periods: 40, throttledPeriods: 30, throttledNs: 2_700_000_000 }),
    });
    expect((await inst.stats()).cpu?.throttling).toEqual({ periods: 40, throttledPeriods: 30, throttledTime: 2_700_000_000 });
    await inst.delete(true);
  });

  test("stats: one task while it runs, and the CPU time of the thread the engine names", async () => {
    const inst = await created();
    await inst.start();
    expect((await inst.stats()).pids?.current).toBe(1);
    expect((await inst.stats()).cpu).toBeUndefined(); // no thread named yet
    // This test's own main thread (tid = pid) stands in for the run's thread.
    runner.runs[0]!.ctx.onControl?.({ pause() {}, resume() {}, threadId: () => process.pid });
    const cpu = (await inst.stats()).cpu?.usage;
    const own = await threadCpu(process.pid);
    expect(cpu?.total).toBe((cpu?.user ?? -1) + (cpu?.kernel ?? -1));
    expect(cpu?.total).toBeGreaterThan(0);
    expect(cpu?.total).toBeLessThanOrEqual((own?.user ?? 0) + (own?.kernel ?? 0));
  });

  test("stats: the module's linear memory as the memory usage (rss), the store limit as the limit, in the cgroup's shape", async () => {
    const inst = await created("c1", plan({ limits: { memoryBytes: 32 << 20 } }));
    await inst.start();
    expect((await inst.stats()).memory).toBeUndefined(); // the engine cannot tell yet
    let bytes = 3 * 65536;
    runner.runs[0]!.ctx.onControl?.({ pause() {}, resume() {}, memoryBytes: async () => bytes });
    expect((await inst.stats()).memory).toEqual({
      usage: { usage: 3 * 65536, max: 3 * 65536, limit: 32 << 20 },
      raw: { rss: 3 * 65536, total_rss: 3 * 65536, anon: 3 * 65536 },
    });
    bytes = 17 * 65536; // it grew
    expect((await inst.stats()).memory?.usage?.usage).toBe(17 * 65536);
    runner.runs[0]!.end(0);
    await inst.exited;
    expect((await inst.stats()).memory).toBeUndefined(); // over: nothing runs
  });

  test("a container created and deleted without a start leaves no fd (the relay's fifo end included)", async () => {
    const inst = await created();
    const fifo = join(dir, "c1", "stdin");
    await inst.kill(9, false);
    await inst.delete(true);
    expect(fdsOn(fifo).length).toBe(0);
  });

  test("stdin: 1 MiB reaches a module that reads slower than containerd writes, whole and in order, then EOF", async () => {
    const inst = await created();
    await inst.start();
    const fifo = (runner.runs[0]!.ctx.stdin as { path: string }).path;
    const input = Buffer.alloc(1 << 20);
    for (let i = 0; i < input.length; i++) input[i] = (i * 7 + (i >> 12)) & 0xff;
    // The module: a reader that takes 4 KiB at a time with pauses, so the fifo fills up.
    const reader = Bun.spawn(["sh", "-c", `exec dd if=${fifo} bs=4096 status=none | cat`], { stdout: "pipe" });
    const got = new Response(reader.stdout).arrayBuffer();
    // containerd's side: written as fast as the fifo takes it (non-blocking, retried).
    for (let off = 0; off < input.length; ) {
      try {
        off += writeSync(stdinWriter, input, off, Math.min(65536, input.length - off));
      } catch {
        await Bun.sleep(1);
      }
    }
    closeSync(stdinWriter);
    stdinWriter = -1; // closed: afterEach must not close the number again (it may be reused by then)
    expect(Buffer.from(await got).equals(input)).toBe(true);
    expect(await reader.exited).toBe(0);
    runner.runs[0]!.end(0);
    await inst.delete(true);
    expect(fdsOn(fifo).length).toBe(0);
  });

  test("stdin: input that ends before the module opens its fifo still reaches it, then EOF", async () => {
    const inst = await created();
    await inst.start();
    writeSync(stdinWriter, "early\n");
    closeSync(stdinWriter);
    stdinWriter = -1;
    await Bun.sleep(50); // containerd's side is over before the module (cat) opens the fifo
    const fifo = (runner.runs[0]!.ctx.stdin as { path: string }).path;
    const reader = Bun.spawn(["cat", fifo], { stdout: "pipe" });
    expect(await new Response(reader.stdout).text()).toBe("early\n");
    expect(await reader.exited).toBe(0);
    runner.runs[0]!.end(0);
    await inst.delete(true);
    expect(fdsOn(fifo).length).toBe(0);
  });

  test("stdin: a run that ends without opening its fifo leaves the relay holding nothing", async () => {
    const inst = await created();
    await inst.start();
    const fifo = (runner.runs[0]!.ctx.stdin as { path: string }).path;
    await Bun.sleep(20); // the relay waits for the module to open the fifo
    runner.runs[0]!.end(125); // e.g. the module failed to link: it never opened stdin
    await inst.delete(true);
    expect(fdsOn(fifo).length).toBe(0);
  });

  test("stdin: what containerd writes reaches the module's fifo, then EOF", async () => {
    const inst = await created();
    await inst.start();
    await Bun.sleep(0);
    // The module's side: open the fifo as the engine does (blocking: it waits for the relay).
    const fifo = (runner.runs[0]!.ctx.stdin as { path: string }).path;
    const reader = Bun.spawn(["cat", fifo], { stdout: "pipe" });
    writeSync(stdinWriter, "hello stdin\n");
    closeSync(stdinWriter);
    stdinWriter = -1; // closed: afterEach must not close the number again (it may be reused by then)
    expect(await new Response(reader.stdout).text()).toBe("hello stdin\n");
    expect(await reader.exited).toBe(0);
    runner.runs[0]!.end(0);
    await inst.delete(true);
    expect(fdsOn(fifo).length).toBe(0);
  });

  test("stdin: a kill ends a module's blocked read (EOF), though containerd's side stays open", async () => {
    const inst = await created();
    await inst.start();
    await Bun.sleep(0);
    const fifo = (runner.runs[0]!.ctx.stdin as { path: string }).path;
    const reader = Bun.spawn(["cat", fifo], { stdout: "pipe" });
    await Bun.sleep(50);
    await inst.kill(15, false);
    expect(await reader.exited).toBe(0);
    expect(readFileSync(join(dir, "out"), "utf8")).toBe("");
    await inst.delete(true);
    expect(fdsOn(fifo).length).toBe(0);
  });
});

/** A console as the Task service's (src/task/console.ts): the master handed over, and its hangup. */
class FakeConsole implements ProcessConsole {
  master = -1;
  onHangup?: () => void;
  socketPath(): string {
    throw new Error("an in-process runtime hands the master over");
  }
  handOver(master: number, onHangup?: () => void): void {
    this.master = master;
    this.onHangup = onHangup;
  }
  /** The service's Terminal closing: the hangup first, then the master. */
  hangUp(): void {
    this.onHangup?.();
    this.close();
  }
  close(): void {
    if (this.master >= 0) closeSync(this.master);
    this.master = -1;
  }
}

/** What the master has to read (non-blocking): the text, or "EIO" once every slave fd is closed. */
function readMaster(master: number): string {
  const buf = Buffer.alloc(4096);
  let text = "";
  for (;;) {
    try {
      const n = readSync(master, buf, 0, buf.length, null);
      if (n <= 0) return text;
      text += buf.toString("utf8", 0, n);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EAGAIN") return text;
      return `${text}${code}`;
    }
  }
}

describe("a terminal (a pty of the daemon's own)", () => {
  test("create makes a pty: its master to the console, its slave the run's stdout and stderr and the source of its stdin; its output ends with the run; nothing left after delete", async () => {
    const before = readdirSync("/proc/self/fd").length;
    const console = new FakeConsole();
    const inst = await created("t1", plan(), { io: { stdio: null, console } });
    expect(console.master).toBeGreaterThanOrEqual(0);
    expect(runner.runs).toHaveLength(0);
    setNonBlocking(console.master);
    await inst.start();
    await Bun.sleep(0);
    const ctx = runner.runs[0]!.ctx;
    const out = (ctx.stdout as { fd: number }).fd;
    expect((ctx.stderr as { fd: number }).fd).toBe(out);
    expect(readlinkSync(`/proc/self/fd/${out}`)).toMatch(/^\/dev\/pts\/\d+$/);
    // The module's side: writes through the slave reach the master through the line discipline.
    const w = openSync(`/proc/self/fd/${out}`, constants.O_RDWR | constants.O_NOCTTY);
    writeSync(w, "out\n");
    closeSync(w);
    expect(readMaster(console.master)).toBe("out\r\n");
    // What is typed: echoed by the line discipline, the line on the module's stdin; ^D is EOF.
    const fifo = (ctx.stdin as { path: string }).path;
    const reader = Bun.spawn(["cat", fifo], { stdout: "pipe" });
    writeSync(console.master, "typed\n\x04");
    expect(await new Response(reader.stdout).text()).toBe("typed\n");
    expect(readMaster(console.master)).toBe("typed\r\n");
    runner.runs[0]!.end(0);
    expect((await inst.exited).status).toBe(0);
    // Every slave fd is gone with the run: the master reads EIO, as when a process's last fd of its terminal closes.
    await until("EIO on the master", () => readMaster(console.master) === "EIO");
    await inst.delete(true);
    console.close();
    expect(readdirSync("/proc/self/fd").length).toBe(before);
  });

  test("the terminal hangs up (CloseIO, then EOF): a running module gets SIGHUP (129), though it reached its own end (EOF) first", async () => {
    const console = new FakeConsole();
    runner.ignoreAbort = true; // the module's own end: its read of stdin saw EOF
    const inst = await created("t2", plan(), { io: { stdio: null, console } });
    await inst.start();
    await Bun.sleep(0);
    console.hangUp();
    runner.runs[0]!.end(0);
    expect((await inst.exited).status).toBe(129);
    await inst.delete(true);
  });

  test("a hangup of a created, never started container changes nothing; delete frees the pty", async () => {
    const before = readdirSync("/proc/self/fd").length;
    const console = new FakeConsole();
    const inst = await created("t4", plan(), { io: { stdio: null, console } });
    console.hangUp();
    await inst.start();
    await Bun.sleep(0);
    expect(runner.runs).toHaveLength(1);
    runner.runs[0]!.end(3);
    expect((await inst.exited).status).toBe(3);
    await inst.delete(true);
    expect(readdirSync("/proc/self/fd").length).toBe(before);
  });
});

describe("what a wasm container in the daemon cannot do", () => {
  test("OOM kills: nobody watches", async () => {
    const inst = await created();
    expect(inst.oomKilled()).toBeNull();
    await inst.delete(true);
  });
});

/**
 * A run's control that records the CPU limits and memory limits Update sets; a memory limit
 * below `usage` is refused, as the engine refuses one below what the module already uses.
 */
function recordingControl(usage = 0): { control: RunControl; set: unknown[]; limits: (number | undefined)[] } {
  const set: unknown[] = [];
  const limits: (number | undefined)[] = [];
  const control: RunControl = {
    pause() {},
    resume() {},
    setCpu: (c) => set.push(c),
    setMemoryLimit: async (bytes) => {
      if (bytes !== undefined && bytes < usage) throw new MemoryLimitBelowUsage(bytes, usage);
      limits.push(bytes);
    },
  };
  return { control, set, limits };
}

describe("Update of a running wasm container", () => {
  test("a new memory limit goes to the running module (its control); one below its usage is refused with runc's words, and nothing of that Update applies", async () => {
    const inst = await created("c1", plan({ limits: { memoryBytes: 64 << 20, cpu: { quota: 10_000, period: 100_000 } } }));
    await inst.start();
    const { control, set, limits } = recordingControl(32 << 20);
    runner.runs[0]!.ctx.onControl?.(control);
    await expect(inst.update(JSON.stringify({ memory: { limit: 16 << 20 }, cpu: { quota: 50_000 } }))).rejects.toThrow(
      `update of wasm container c1: unable to set memory limit to ${16 << 20} (current usage: ${32 << 20})`,
    );
    expect(set).toEqual([]);
    expect(limits).toEqual([]);
    // The same limit again (CRI sends every field) is no change; a new one goes to the run.
    await inst.update(JSON.stringify({ memory: { limit: 64 << 20 }, cpu: { quota: 50_000 } }));
    expect(limits).toEqual([]);
    expect(set).toEqual([{ quota: 50_000, period: 100_000 }]);
    await inst.update(JSON.stringify({ memory: { limit: 128 << 20 } }));
    expect(limits).toEqual([128 << 20]);
    // Not a byte count: refused (INVALID_ARGUMENT), as is JSON that does not parse.
    for (const limit of [-2, 1.5, 2 ** 60])
      await expect(inst.update(JSON.stringify({ memory: { limit } }))).rejects.toMatchObject({ code: 3 });
    await expect(inst.update("{nope")).rejects.toMatchObject({ code: 3 });
    expect(limits).toEqual([128 << 20]);
    await inst.delete(true);
  });
});

describe("a cpuset (src/linux/cpuset.ts decides; this machine's CPUs: the test's own)", () => {
  const mine = () => schedGetaffinity(0)[0] as number[];
  const last = () => String(mine().at(-1));

  test("Create refuses a cpuset naming no CPU of the daemon's, or unparsable, or mems leaving out its node (INVALID_ARGUMENT), before it mounts anything", async () => {
    for (const cpuset of [{ cpus: "8000" }, { cpus: "1-x" }, { mems: "63" }]) {
      const undo = new UndoStack();
      await expect(created("c1", plan({ limits: { cpuset } }), { undo })).rejects.toMatchObject({ code: 3 });
      expect(mountsUnder(viewDir(join(dir, "c1")))).toEqual([]);
    }
  });

  // A narrower cpuset needs two CPUs to choose from (skipped, not passed, on one).
  const twoCpus = (schedGetaffinity(0)[0]?.length ?? 0) >= 2;

  test.if(twoCpus)(
    "one that covers every CPU of the daemon's changes nothing; a narrower one is the run's cpus, and Update moves an own-thread run",
    async () => {
      const all = await created("c0", plan({ limits: { cpuset: { cpus: formatCpuList(mine()) } } }));
      await all.start();
      expect(runner.runs[0]!.ctx.cpu).toEqual({});
      await all.delete(true);
      const inst = await created("c1", plan({ limits: { cpu: { quota: 10_000 }, cpuset: { cpus: last() } } }));
      await inst.start();
      expect(runner.runs[1]!.ctx.cpu).toEqual({ quota: 10_000, cpus: [Number(last())] });
      const moves: (number[] | undefined)[] = [];
      runner.runs[1]!.ctx.onControl?.({ pause() {}, resume() {}, setCpu() {}, setCpus: (c) => moves.push(c) });
      await inst.update(JSON.stringify({ cpu: { cpus: String(mine()[0]) } }));
      // An empty list leaves it as it is (runc update's way); the whole set unconfines it.
      await inst.update(JSON.stringify({ cpu: { cpus: "", quota: 20_000 } }));
      await inst.update(JSON.stringify({ cpu: { cpus: formatCpuList(mine()) } }));
      expect(moves).toEqual([[mine()[0] as number], undefined]);
      await inst.delete(true);
    },
  );

  test.if(twoCpus)(
    "an Update that moves a run still starting waits for the engine's control: then moves it, or refuses for a pooled one",
    async () => {
      const own = await created("c1", plan({ limits: { cpuset: { cpus: last() } } }));
      await own.start();
      let answered = false;
      const moving = own.update(JSON.stringify({ cpu: { cpus: String(mine()[0]) } })).then(() => (answered = true));
      await Bun.sleep(0);
      expect(answered).toBe(false);
      const moves: (number[] | undefined)[] = [];
      runner.runs[0]!.ctx.onControl?.({ pause() {}, resume() {}, setCpu() {}, setCpus: (c) => moves.push(c) });
      await moving;
      expect(moves).toEqual([[mine()[0] as number]]);
      await own.delete(true);
      const pooled = await created("c2", plan({}));
      await pooled.start();
      const refused = pooled.update(JSON.stringify({ cpu: { cpus: last() } }));
      runner.runs[1]!.ctx.onControl?.({ pause() {}, resume() {}, setCpu() {} });
      await expect(refused).rejects.toMatchObject({ code: 9, message: expect.stringContaining("cannot be confined to its cpuset alone") });
      await pooled.delete(true);
    },
  );

  test.if(twoCpus)("Update cannot confine a pooled run (no setCpus): FAILED_PRECONDITION, and nothing of that Update applies", async () => {
    const inst = await created("c1", plan({ limits: { memoryBytes: 64 << 20 } }));
    await inst.start();
    const { control, set, limits } = recordingControl();
    runner.runs[0]!.ctx.onControl?.(control);
    await expect(inst.update(JSON.stringify({ memory: { limit: 32 << 20 }, cpu: { quota: 5_000, cpus: last() } }))).rejects.toMatchObject({
      code: 9,
      message: expect.stringContaining("cannot be confined to its cpuset alone; nothing was changed"),
    });
    expect(set).toEqual([]);
    expect(limits).toEqual([]);
    // A cpuset that covers every CPU is no move: the rest applies.
    await inst.update(JSON.stringify({ cpu: { quota: 5_000, cpus: formatCpuList(mine()) } }));
    expect(set).toEqual([{ quota: 5_000 }]);
    await inst.delete(true);
  });
});

describe("its Create", () => {
  test("answers once the compile cache is filled, and pushes its delete on the Create's undo stack", async () => {
    const before = readdirSync("/proc/self/fd").length;
    const undo = new UndoStack();
    const warming = Promise.withResolvers<void>();
    let answered = false;
    const create = created("c1", plan(), { undo, warm: () => warming.promise }).then((i) => {
      answered = true;
      return i;
    });
    for (let i = 0; i < 20; i++) await Bun.sleep(1);
    expect(answered).toBe(false);
    warming.resolve();
    const inst = await create;
    expect(readdirSync("/proc/self/fd").length).toBe(before + 3);
    // A Create that fails after the instance (a terminal's master never came, say) undoes it.
    expect(await undo.run()).toEqual([]);
    expect((await inst.exited).status).toBe(137);
    expect(readdirSync("/proc/self/fd").length).toBe(before);
  });
});

describe("Exec", () => {
  const WASM = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
  const ELF = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]);
  const limits = { memoryBytes: 8 << 20, cpu: { quota: 20_000, period: 100_000 } };

  /** A bundle in `dir` (config.json, the rootfs with a module, a WAT, a native program) and its container, started. */
  async function container(): Promise<InProcessInstance> {
    const root = join(dir, "rootfs");
    writeFileSync(join(root, "app.wasm"), WASM);
    writeFileSync(join(root, "tool.wasm"), WASM);
    writeFileSync(join(root, "hello.wat"), "(module)");
    mkdirSync(join(root, "bin"));
    writeFileSync(join(root, "bin/sh"), ELF, { mode: 0o755 });
    const spec = { ociVersion: "1.0.2", process: { args: ["/app.wasm"], cwd: "/", env: ["PATH=/bin"] }, root: { path: "rootfs" } };
    writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
    const inst = await created("c1", plan({ limits }), { bundle: dir });
    await inst.start();
    await Bun.sleep(0);
    return inst;
  }

  /** An exec's stdio as the Task service opens it: containerd's fifo for stdin, files for the output. */
  function execIo(name: string): { io: ProcessIo; writer: number; close(): void } {
    const { stdio: fds, writer } = taskStdio(`${name}.`);
    return {
      io: { stdio: fds, console: null },
      writer,
      close: () => {
        for (const fd of [...fds, writer]) closeSync(fd);
      },
    };
  }

  const proc = (args: string[]) => ({ args, cwd: "/", env: ["PATH=/bin", "E=1"] });

  test("a module of the container: nothing runs before Start; then a run of its own in the container's view, with its limits and its own stdio", async () => {
    const before = readdirSync("/proc/self/fd").length;
    const inst = await container();
    const e = await inst.exec("e1", proc(["tool.wasm", "x"]));
    expect(runner.runs).toHaveLength(1);
    const x = execIo("e1");
    expect(await e.start(x.io)).toBe(4242);
    // The Task service closes its fds once the runtime has its own copies.
    x.close();
    await Bun.sleep(0);
    expect(runner.runs).toHaveLength(2);
    const ctx = runner.runs[1]!.ctx;
    // Not in the exec's PATH (/bin): found in its cwd, as normal mode finds it.
    expect(readlinkSync(ctx.modulePath as string)).toBe(join(dir, "c1", "wasi-root", "tool.wasm"));
    expect(ctx.args).toEqual(["tool.wasm", "x"]);
    expect(ctx.env).toEqual(["PATH=/bin", "E=1"]);
    expect(ctx.rootDir).toBe(join(dir, "c1", "wasi-root"));
    expect(ctx.memoryLimitBytes).toBe(8 << 20);
    expect(ctx.cpu).toEqual(limits.cpu);
    expect(ctx.stdin).toEqual({ kind: "path", path: join(dir, "c1", "exec-e1.stdin") });
    expect(ctx.stdout).not.toEqual(runner.runs[0]!.ctx.stdout);
    runner.runs[1]!.end(3);
    expect((await e.exited).status).toBe(3);
    expect(() => e.kill(9)).toThrow("already finished");
    e.delete();
    await inst.delete(true);
    // Everything of the exec is gone: its copies of the fifos, its stdin fifo.
    expect(readdirSync("/proc/self/fd").length).toBe(before);
    expect(readdirSync(join(dir, "c1"))).not.toContain("exec-e1.stdin");
  });

  test("#export and a WAT of the rootfs; an Update of the CPU limits reaches a running exec; a pause too", async () => {
    const inst = await container();
    const ex = await inst.exec("e1", proc(["/tool.wasm#hello"]));
    const wat = await inst.exec("e2", proc(["/hello.wat"]));
    const a = execIo("a");
    const b = execIo("b");
    await ex.start(a.io);
    await wat.start(b.io);
    a.close();
    b.close();
    await Bun.sleep(0);
    expect(runner.runs[1]!.ctx.entry).toBe("hello");
    expect(readlinkSync(runner.runs[2]!.ctx.modulePath as string)).toBe(join(dir, "c1", "wasi-root", "hello.wat"));
    const calls: unknown[] = [];
    runner.runs[1]!.ctx.onControl?.({ pause: () => calls.push("pause"), resume: () => calls.push("resume"), setCpu: (c) => calls.push(c) });
    await inst.update(JSON.stringify({ cpu: { quota: 50_000 } }));
    await inst.pause();
    await inst.resume();
    expect(calls).toEqual([{ quota: 50_000, period: 100_000 }, "pause", "resume"]);
    await inst.delete(true);
  });

  test(`at most ${MAX_EXEC_RUNS} execs of a container at once: one more is refused until one is deleted`, async () => {
    const inst = await container();
    const started: { e: InstanceExec; x: ReturnType<typeof execIo> }[] = [];
    for (let i = 0; i < MAX_EXEC_RUNS; i++) {
      const e = await inst.exec(`e${i}`, proc(["/tool.wasm"]));
      const x = execIo(`e${i}`);
      await e.start(x.io);
      x.close();
      started.push({ e, x });
    }
    const extra = await inst.exec("over", proc(["/tool.wasm"]));
    const y = execIo("over");
    await expect(extra.start(y.io)).rejects.toMatchObject({
      code: 8,
      message: expect.stringContaining(`already has ${MAX_EXEC_RUNS} execs`),
    });
    // A deleted exec makes room.
    const first = started[0]!.e;
    first.kill(9);
    await first.exited;
    // Its room is free once its delete has resolved (the Task service answers Delete then).
    await first.delete();
    const again = await inst.exec("again", proc(["/tool.wasm"]));
    expect(await again.start(y.io)).toBe(4242);
    y.close();
    await inst.delete(true);
  });

  test("kill of an exec ends it with 128+s; the container runs on", async () => {
    const inst = await container();
    const e = await inst.exec("e1", proc(["/tool.wasm"]));
    const x = execIo("e1");
    await e.start(x.io);
    x.close();
    e.kill(15);
    expect((await e.exited).status).toBe(143);
    expect(await inst.pids()).toEqual([4242]);
    e.delete();
    await inst.delete(true);
  });

  test("the container's Delete ends its running execs first (137) and frees them", async () => {
    const before = readdirSync("/proc/self/fd").length;
    const inst = await container();
    const e = await inst.exec("e1", proc(["/tool.wasm"]));
    const x = execIo("e1");
    await e.start(x.io);
    x.close();
    await inst.delete(true);
    expect((await e.exited).status).toBe(137);
    expect((await inst.exited).status).toBe(137);
    expect(readdirSync("/proc/self/fd").length).toBe(before);
    expect(readdirSync(join(dir, "c1"))).not.toContain("exec-e1.stdin");
  });

  test("an exec with a terminal: a pty of its own (not the container's stdio), its master to the exec's console; freed at its Delete", async () => {
    const before = readdirSync("/proc/self/fd").length;
    const inst = await container();
    const e = await inst.exec("t", { ...proc(["/tool.wasm"]), terminal: true });
    const console = new FakeConsole();
    await e.start({ stdio: null, console });
    await Bun.sleep(0);
    const ctx = runner.runs[1]!.ctx;
    const fd = (ctx.stdout as { fd: number }).fd;
    expect((ctx.stderr as { fd: number }).fd).toBe(fd);
    expect(readlinkSync(`/proc/self/fd/${fd}`)).toMatch(/^\/dev\/pts\/\d+$/);
    // CloseIO then EOF: the exec gets SIGHUP; the container runs on.
    console.hangUp();
    expect((await e.exited).status).toBe(129);
    e.delete();
    runner.runs[0]!.end(0);
    await inst.exited;
    // The container's Delete waits for its execs to be freed.
    await inst.delete(true);
    expect(readdirSync("/proc/self/fd").length).toBe(before);
  });

  test("refused, saying why, before anything is made: a native program, another user, a missing file; after the init's exit", async () => {
    const inst = await container();
    const before = readdirSync("/proc/self/fd").length;
    await expect(inst.exec("n", proc(["sh", "-c", "true"]))).rejects.toMatchObject({
      code: 9,
      message: expect.stringContaining("/bin/sh is a native program, and in shared mode a wasm container runs on a thread of the daemon"),
    });
    await expect(inst.exec("u", { ...proc(["/tool.wasm"]), user: { uid: 1000, gid: 1000 } })).rejects.toMatchObject({
      code: 9,
      message: expect.stringContaining("as user 1000:1000, but the container runs as 0:0"),
    });
    await expect(inst.exec("m", proc(["/nope.wasm"]))).rejects.toThrow("/nope.wasm: no such file in the container's rootfs");
    expect(readdirSync("/proc/self/fd").length).toBe(before);
    runner.runs[0]!.end(0);
    await inst.exited;
    await expect(inst.exec("late", proc(["/tool.wasm"]))).rejects.toMatchObject({
      code: 9,
      message: expect.stringContaining("it has exited"),
    });
    await inst.delete(true);
  });
});
