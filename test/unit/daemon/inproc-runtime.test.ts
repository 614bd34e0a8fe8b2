// The daemon's in-process runtime (src/daemon/inproc-runtime.ts) with a fake Runner: what
// it hands the engine (module, argv, env, rootfs, limits, stdio), how each Task call maps
// onto a run (create holds, start runs, kill aborts or ends a created one, delete cleans
// up), the stdin relay (data and EOF reach the module's fifo, a kill ends a blocked read),
// and the hybrid runtime's dispatch between in-process and runc.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HybridRuntime, type InProcessPlan, InProcessRuntime, threadCpu } from "../../../src/daemon/inproc-runtime.ts";
import { mkfifo } from "../../../src/daemon/stdin-relay.ts";
import type { RunContext, Runner, RunResult } from "../../../src/engines/engine.ts";
import type { RuncStats } from "../../../src/linux/runc.ts";
import type { OciRuntime } from "../../../src/task/host.ts";

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
let rt: InProcessRuntime;
let stdio: [number, number, number];
let stdinWriter: number;

const plan = (over: Partial<InProcessPlan> = {}): InProcessPlan => ({
  modulePath: "/rootfs/app.wasm",
  args: ["/app.wasm", "a b"],
  env: ["K=V"],
  rootfs: "/rootfs",
  rootReadOnly: true,
  cwd: "/",
  memoryLimitBytes: 1 << 20,
  ...over,
});

async function created(id = "c1", p = plan()): Promise<number> {
  const work = join(dir, id);
  mkdirSync(work, { recursive: true });
  rt.plans.set(work, p);
  return rt.create(id, work, stdio, work);
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "inproc-"));
  runner = new FakeRunner();
  rt = new InProcessRuntime({ runner: async () => runner, pid: 4242 });
  // A fifo as containerd's stdin: we keep its write end.
  mkfifo(join(dir, "in"));
  const r = openSync(join(dir, "in"), constants.O_RDONLY | constants.O_NONBLOCK);
  stdinWriter = openSync(join(dir, "in"), constants.O_WRONLY | constants.O_NONBLOCK);
  stdio = [r, openSync(join(dir, "out"), "w"), openSync(join(dir, "err"), "w")];
});

afterEach(() => {
  for (const fd of [...stdio, stdinWriter]) {
    try {
      closeSync(fd);
    } catch {}
  }
  rmSync(dir, { recursive: true, force: true });
});

describe("InProcessRuntime", () => {
  test("create holds the plan and reports the daemon's pid; start runs it with the plan", async () => {
    expect(await created()).toBe(4242);
    expect(runner.runs).toHaveLength(0);
    await rt.start("c1");
    await Bun.sleep(0);
    expect(runner.runs).toHaveLength(1);
    const ctx = runner.runs[0]!.ctx;
    expect(ctx.modulePath).toBe("/rootfs/app.wasm");
    expect(ctx.args).toEqual(["/app.wasm", "a b"]);
    expect(ctx.env).toEqual(["K=V"]);
    expect(ctx.rootDir).toBe("/rootfs");
    expect(ctx.rootReadOnly).toBe(true);
    expect(ctx.memoryLimitBytes).toBe(1 << 20);
    // stdout/stderr: our own copies of the fifos; stdin: the relay's fifo.
    expect(ctx.stdout?.kind).toBe("fd");
    expect(ctx.stdin).toEqual({ kind: "path", path: join(dir, "c1", "stdin") });
    expect(await rt.ps("c1")).toEqual([4242]);
    runner.runs[0]!.end(3);
    expect((await rt.exitOf("c1"))?.status).toBe(3);
    expect(await rt.ps("c1")).toEqual([]);
  });

  test("kill of a running module aborts its run with the signal: 128+s", async () => {
    await created();
    await rt.start("c1");
    await rt.kill("c1", 15, false);
    expect((await rt.exitOf("c1"))?.status).toBe(143);
    await expect(rt.kill("c1", 9, false)).rejects.toThrow("already finished");
  });

  test("a module killed while running that reaches its own exit first still ends with the signal", async () => {
    runner.ignoreAbort = true;
    await created();
    await rt.start("c1");
    await Bun.sleep(0);
    await rt.kill("c1", 15, false);
    runner.runs[0]!.end(0); // e.g. cat, given EOF by the kill
    expect((await rt.exitOf("c1"))?.status).toBe(143);
  });

  test("kill of a created, never started container ends it with the signal; nothing ever runs", async () => {
    await created();
    await rt.kill("c1", 9, false);
    expect((await rt.exitOf("c1"))?.status).toBe(137);
    expect(runner.runs).toHaveLength(0);
    await expect(rt.start("c1")).rejects.toThrow("has exited");
  });

  test("delete (force) of a running module kills it, closes its fds, forgets it", async () => {
    const before = readdirSync("/proc/self/fd").length;
    await created();
    expect(readdirSync("/proc/self/fd").length).toBe(before + 3);
    await rt.start("c1");
    await expect(rt.delete("c1", false)).rejects.toThrow("is running");
    await rt.delete("c1", true);
    expect((await rt.exitOf("c1")) ?? "gone").toBe("gone");
    expect(rt.has("c1")).toBe(false);
    expect(readdirSync("/proc/self/fd").length).toBe(before);
    await rt.delete("c1", true); // forced delete of what is gone: fine
    await expect(rt.delete("c1", false)).rejects.toThrow("does not exist");
  });

  test("pause and resume go to the engine's control of the run; a pause before it is handed over is kept", async () => {
    const seen: string[] = [];
    await created();
    await expect(rt.pause("c1")).rejects.toThrow("not running");
    await rt.start("c1");
    await rt.pause("c1"); // the fake run has not handed over its control yet
    runner.runs[0]!.ctx.onControl?.({ pause: () => seen.push("pause"), resume: () => seen.push("resume") });
    await rt.resume("c1");
    await rt.pause("c1");
    expect(seen).toEqual(["pause", "resume", "pause"]);
  });

  test("stats: one task while it runs, and the CPU time of the thread the engine names", async () => {
    await created();
    await rt.start("c1");
    expect((await rt.stats("c1")).pids?.current).toBe(1);
    expect((await rt.stats("c1")).cpu).toBeUndefined(); // no thread named yet
    // This test's own main thread (tid = pid) stands in for the run's thread.
    runner.runs[0]!.ctx.onControl?.({ pause() {}, resume() {}, threadId: () => process.pid });
    const cpu = (await rt.stats("c1")).cpu?.usage;
    const own = await threadCpu(process.pid);
    expect(cpu?.total).toBe((cpu?.user ?? -1) + (cpu?.kernel ?? -1));
    expect(cpu?.total).toBeGreaterThan(0);
    expect(cpu?.total).toBeLessThanOrEqual((own?.user ?? 0) + (own?.kernel ?? 0));
  });

  test("stdin: what containerd writes reaches the module's fifo, then EOF", async () => {
    await created();
    await rt.start("c1");
    await Bun.sleep(0);
    // The module's side: open the fifo as the engine does (blocking: it waits for the relay).
    const fifo = (runner.runs[0]!.ctx.stdin as { path: string }).path;
    const reader = Bun.spawn(["cat", fifo], { stdout: "pipe" });
    writeSync(stdinWriter, "hello stdin\n");
    closeSync(stdinWriter);
    expect(await new Response(reader.stdout).text()).toBe("hello stdin\n");
    expect(await reader.exited).toBe(0);
    runner.runs[0]!.end(0);
  });

  test("stdin: a kill ends a module's blocked read (EOF), though containerd's side stays open", async () => {
    await created();
    await rt.start("c1");
    await Bun.sleep(0);
    const fifo = (runner.runs[0]!.ctx.stdin as { path: string }).path;
    const reader = Bun.spawn(["cat", fifo], { stdout: "pipe" });
    await Bun.sleep(50);
    await rt.kill("c1", 15, false);
    expect(await reader.exited).toBe(0);
    expect(readFileSync(join(dir, "out"), "utf8")).toBe("");
  });
});

describe("HybridRuntime", () => {
  test("a bundle with an in-process plan runs in-process; anything else goes to runc", async () => {
    const calls: string[] = [];
    const runc: OciRuntime = {
      create: async (id) => {
        calls.push(`create ${id}`);
        return 77;
      },
      start: async (id) => void calls.push(`start ${id}`),
      kill: async (id) => void calls.push(`kill ${id}`),
      delete: async (id) => void calls.push(`delete ${id}`),
      pause: async (id) => void calls.push(`pause ${id}`),
      resume: async (id) => void calls.push(`resume ${id}`),
      ps: async () => [77],
      stats: async () => ({}) as RuncStats,
      exec: async (id) => {
        calls.push(`exec ${id}`);
        return 78;
      },
      update: async (id) => void calls.push(`update ${id}`),
    };
    const h = new HybridRuntime(rt, runc);
    const work = join(dir, "w1");
    mkdirSync(work);
    rt.plans.set(work, plan());
    expect(await h.create("wasm1", work, join(work, "init.pid"), stdio, join(work, "log"))).toBe(4242);
    expect(await h.create("native1", "/bundle", join(dir, "p"), stdio, join(dir, "l"))).toBe(77);
    expect(calls).toEqual(["create native1"]);
    await h.start("wasm1");
    await h.pause("native1");
    expect(await h.exec("native1", "/p.json", join(dir, "e.pid"), stdio, join(dir, "el"))).toBe(78);
    await h.update("native1", "{}");
    expect(calls).toEqual(["create native1", "pause native1", "exec native1", "update native1"]);
    // A wasm container in the daemon has no process to exec into and no cgroup of its own.
    await expect(h.exec("wasm1", "/p.json", join(dir, "e.pid"), stdio, join(dir, "el"))).rejects.toThrow("not supported in shared mode");
    await expect(h.update("wasm1", "{}")).rejects.toThrow("not supported in shared mode");
    expect(h.exitOf("wasm1")).toBeInstanceOf(Promise);
    expect(h.exitOf("native1")).toBeUndefined();
    await h.delete("wasm1", true);
  });
});
