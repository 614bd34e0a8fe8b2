// The daemon's in-process runtime (src/daemon/inproc-runtime.ts) with a fake Runner: what
// it hands the engine (module, argv, env, rootfs, limits, stdio), how each Task call maps
// onto a run (create holds, start runs, kill aborts or ends a created one, delete cleans
// up), the stdin relay (data and EOF reach the module's fifo, a kill ends a blocked read),
// and the hybrid runtime's dispatch between in-process and runc.
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
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HybridRuntime, type InProcessPlan, InProcessRuntime, threadCpu } from "../../../src/daemon/inproc-runtime.ts";
import type { RunContext, Runner, RunResult } from "../../../src/engines/engine.ts";
import { mkfifo } from "../../../src/linux/libc.ts";
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

/** How many of this process's fds are open on `path`. */
function fdsOn(path: string): number {
  let n = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === path) n++;
    } catch {} // the fd of the directory listing itself, gone by now
  }
  return n;
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

afterEach(async () => {
  // What a test left (a run it ended without Delete) is deleted here: its fds close when its
  // relay lets go, which must not happen during the next test's fd count.
  await rt.delete("c1", true);
  for (const fd of [...stdio, stdinWriter]) {
    if (fd < 0) continue;
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

  test("the module's output ends with its run, before the exit is reported and before any Delete (containerd's reader sees EOF)", async () => {
    // containerd's side of stdout and stderr: fifos it reads; the Task service opens them
    // read-write and closes its own fds once the runtime has its copies, as after a create.
    const readers: number[] = [];
    for (const name of ["fifo-out", "fifo-err"]) {
      mkfifo(join(dir, name));
      readers.push(openSync(join(dir, name), constants.O_RDONLY | constants.O_NONBLOCK));
    }
    const [out, err] = ["fifo-out", "fifo-err"].map((n) => openSync(join(dir, n), constants.O_RDWR));
    for (const fd of [stdio[1], stdio[2]]) closeSync(fd);
    stdio = [stdio[0], out!, err!];
    const readNow = (fd: number) => {
      const buf = Buffer.alloc(64);
      try {
        return buf.subarray(0, readSync(fd, buf)).toString();
      } catch (e) {
        return (e as NodeJS.ErrnoException).code; // EAGAIN: a writer is still there
      }
    };
    try {
      await created();
      for (const fd of [out!, err!]) closeSync(fd);
      stdio = [stdio[0], -1, -1];
      await rt.start("c1");
      await Bun.sleep(0);
      const run = runner.runs[0]!;
      writeSync((run.ctx.stdout as { fd: number }).fd, "hello\n");
      // Running: the output is open (our copies are its writers).
      expect(readers.map(readNow)).toEqual(["hello\n", "EAGAIN"]);
      run.end(0);
      expect((await rt.exitOf("c1"))?.status).toBe(0);
      // Exited and not deleted: what was written was read, and then the end of both.
      expect(readers.map(readNow)).toEqual(["", ""]);
      await rt.delete("c1", false);
    } finally {
      for (const fd of readers) closeSync(fd);
    }
  });

  test("a created, never started container killed: its stdio is closed at once, before any Delete", async () => {
    mkfifo(join(dir, "fifo-out"));
    const reader = openSync(join(dir, "fifo-out"), constants.O_RDONLY | constants.O_NONBLOCK);
    const out = openSync(join(dir, "fifo-out"), constants.O_RDWR);
    closeSync(stdio[1]);
    stdio = [stdio[0], out, stdio[2]];
    try {
      await created();
      closeSync(out);
      stdio = [stdio[0], -1, stdio[2]];
      const buf = Buffer.alloc(8);
      expect(() => readSync(reader, buf)).toThrow("EAGAIN");
      await rt.kill("c1", 9, true);
      expect(readSync(reader, buf)).toBe(0); // EOF
      await rt.delete("c1", false);
    } finally {
      closeSync(reader);
    }
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

  test("stats: the module's linear memory as the memory usage (rss), the store limit as the limit, in the cgroup's shape", async () => {
    await created("c1", plan({ memoryLimitBytes: 32 << 20 }));
    await rt.start("c1");
    expect((await rt.stats("c1")).memory).toBeUndefined(); // the engine cannot tell yet
    let bytes = 3 * 65536;
    runner.runs[0]!.ctx.onControl?.({ pause() {}, resume() {}, memoryBytes: async () => bytes });
    expect((await rt.stats("c1")).memory).toEqual({
      usage: { usage: 3 * 65536, max: 3 * 65536, limit: 32 << 20 },
      raw: { rss: 3 * 65536, total_rss: 3 * 65536, anon: 3 * 65536 },
    });
    bytes = 17 * 65536; // it grew
    expect((await rt.stats("c1")).memory?.usage?.usage).toBe(17 * 65536);
    runner.runs[0]!.end(0);
    await rt.exitOf("c1");
    expect((await rt.stats("c1")).memory).toBeUndefined(); // over: nothing runs
  });

  test("a container created and deleted without a start leaves no fd (the relay's fifo end included)", async () => {
    await created();
    const fifo = join(dir, "c1", "stdin");
    await rt.kill("c1", 9, false);
    await rt.delete("c1", true);
    expect(fdsOn(fifo)).toBe(0);
  });

  test("stdin: 1 MiB reaches a module that reads slower than containerd writes, whole and in order, then EOF", async () => {
    await created();
    await rt.start("c1");
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
    await rt.delete("c1", true);
    expect(fdsOn(fifo)).toBe(0);
  });

  test("stdin: input that ends before the module opens its fifo still reaches it, then EOF", async () => {
    await created();
    await rt.start("c1");
    writeSync(stdinWriter, "early\n");
    closeSync(stdinWriter);
    stdinWriter = -1;
    await Bun.sleep(50); // containerd's side is over before the module (cat) opens the fifo
    const fifo = (runner.runs[0]!.ctx.stdin as { path: string }).path;
    const reader = Bun.spawn(["cat", fifo], { stdout: "pipe" });
    expect(await new Response(reader.stdout).text()).toBe("early\n");
    expect(await reader.exited).toBe(0);
    runner.runs[0]!.end(0);
    await rt.delete("c1", true);
    expect(fdsOn(fifo)).toBe(0);
  });

  test("stdin: a run that ends without opening its fifo leaves the relay holding nothing", async () => {
    await created();
    await rt.start("c1");
    const fifo = (runner.runs[0]!.ctx.stdin as { path: string }).path;
    await Bun.sleep(20); // the relay waits for the module to open the fifo
    runner.runs[0]!.end(125); // e.g. the module failed to link: it never opened stdin
    await rt.delete("c1", true);
    expect(fdsOn(fifo)).toBe(0);
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
    stdinWriter = -1; // closed: afterEach must not close the number again (it may be reused by then)
    expect(await new Response(reader.stdout).text()).toBe("hello stdin\n");
    expect(await reader.exited).toBe(0);
    runner.runs[0]!.end(0);
    await rt.delete("c1", true);
    expect(fdsOn(fifo)).toBe(0);
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
    await rt.delete("c1", true);
    expect(fdsOn(fifo)).toBe(0);
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
