// ExitWatcher and the orphan sweep: exits of processes reparented to us (we are a child subreaper),
// without stealing the children Bun.spawn waits for. Linux x86_64 only.

import { afterEach, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { ExitWatcher } from "../../../src/linux/exit-watcher.ts";
import { reapOrphans } from "../../../src/linux/orphans.ts";
import { listChildren } from "../../../src/linux/proc.ts";
import { asyncWatchReads } from "../../../src/linux/proc-async.ts";
import { becomeSubreaper, isSubreaper } from "../../../src/linux/subreaper.ts";
import { until } from "../../support/until.ts";

const linux = process.platform === "linux" && process.arch === "x64";

test("prerequisites: linux on x86_64 (pidfd and siginfo layouts)", () => expect(linux).toBe(true));

function state(pid: number): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    return s.slice(s.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

/** Runs `sh -c script` (which prints background pids, one a line) and waits for sh to exit: the
 *  background processes are then orphans reparented to us. */
async function orphans(script: string): Promise<number[]> {
  const sh = Bun.spawn(["sh", "-c", script], { stdout: "pipe", stderr: "inherit" });
  const out = await new Response(sh.stdout).text();
  expect(await sh.exited).toBe(0);
  return out
    .split("\n")
    .filter((l) => l.trim())
    .map(Number);
}

/**
 * Runs `f` with setInterval disabled (intervals are recorded, never started): the watcher's
 * periodic polls cannot fire, so whatever resolves a watch meanwhile is the SIGCHLD listener
 * or the poll watch() itself makes. A liveness timer (setTimeout) still fails a hang.
 */
async function withoutIntervals<T>(f: () => Promise<T>): Promise<{ value: T; intervals: number[] }> {
  const real = globalThis.setInterval;
  const intervals: number[] = [];
  globalThis.setInterval = ((_fn: () => void, ms?: number) => {
    intervals.push(ms ?? 0);
    return real(() => {}, 2 ** 30);
  }) as unknown as typeof setInterval;
  try {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const liveness = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("timed out (liveness)")), 30_000);
    });
    try {
      return { value: await Promise.race([f(), liveness]), intervals };
    } finally {
      clearTimeout(timer);
    }
  } finally {
    globalThis.setInterval = real;
  }
}

let w: ExitWatcher | undefined;
function watcher(opts: ConstructorParameters<typeof ExitWatcher>[0] = { reapIntervalMs: 0 }): ExitWatcher {
  w = new ExitWatcher(opts);
  return w;
}
afterEach(async () => {
  await w?.close();
  w = undefined;
});

describe("reaper", () => {
  beforeAll(() => {
    becomeSubreaper();
    expect(isSubreaper()).toBe(true);
  });

  test("an orphaned grandchild's exit code is reported when it exits, not before", async () => {
    const ew = watcher();
    // The orphan runs until we create `gate`: its exit is ours to time, not a sleep's.
    const gate = join(mkdtempSync(join(tmpdir(), "bunwasi-reaper-")), "go");
    const [pid] = await orphans(`(while [ ! -e ${gate} ]; do sleep 0.01; done; exit 7) >/dev/null & echo $!`);
    try {
      expect(listChildren()).toContain(pid as number);
      let settled = false;
      const p = ew.watch(pid as number).finally(() => {
        settled = true;
      });
      await until("the pid to be watched", () => ew.isWatched(pid as number));
      await Bun.sleep(50);
      expect(settled).toBe(false); // alive: nothing to report yet
      expect(state(pid as number)).not.toBe("Z");
      writeFileSync(gate, "");
      const r = await p;
      expect(r.status).toBe(7);
      expect(r.source).toBe("waitid");
      expect(r.exitedAt).toBeInstanceOf(Date);
      expect(state(pid as number)).toBeUndefined(); // reaped, no zombie
    } finally {
      // Whatever failed above, the orphan ends (it would wait for the gate for ever).
      writeFileSync(gate, "");
      await until("the orphan to end", () => [undefined, "Z"].includes(state(pid as number))).catch(() =>
        process.kill(pid as number, "SIGKILL"),
      );
      rmSync(dirname(gate), { recursive: true, force: true });
    }
  });

  test("a grandchild killed by SIGKILL reports 137", async () => {
    const ew = watcher();
    const [pid] = await orphans("sleep 30 >/dev/null & echo $!");
    const p = ew.watch(pid as number);
    process.kill(pid as number, "SIGKILL");
    const r = await p;
    expect(r.status).toBe(137);
    expect(state(pid as number)).toBeUndefined();
  });

  test("SIGTERM → 143", async () => {
    const ew = watcher();
    const [pid] = await orphans("sleep 30 >/dev/null & echo $!");
    const p = ew.watch(pid as number);
    process.kill(pid as number, "SIGTERM");
    expect((await p).status).toBe(143);
  });

  test("20 orphans at once each get their own status", async () => {
    const ew = watcher();
    let script = "";
    for (let i = 0; i < 20; i++) script += `(sleep 0.2; exit ${i + 1}) >/dev/null & echo $!\n`;
    const pids = await orphans(script);
    expect(pids.length).toBe(20);
    const results = await Promise.all(pids.map((p) => ew.watch(p)));
    expect(results.map((r) => r.status)).toEqual(pids.map((_, i) => i + 1));
    expect(results.map((r) => r.pid)).toEqual(pids);
    expect(ew.size).toBe(0);
    for (const p of pids) expect(state(p)).toBeUndefined();
  });

  test("a pid that is already a zombie when watched resolves without any timer (its SIGCHLD came before the watch)", async () => {
    const ew = watcher();
    const [pid] = await orphans("(sleep 0.05; exit 9) >/dev/null & echo $!");
    await until("the orphan to be a zombie", () => state(pid as number) === "Z");
    // Its SIGCHLD came before the watch; with the periodic polls disabled only the poll that
    // watch() makes itself can find it.
    const { value: r } = await withoutIntervals(() => ew.watch(pid as number));
    expect(r.status).toBe(9);
    expect(r.source).toBe("waitid");
  });

  test("Bun.spawn children running alongside keep their exit codes (we never steal them)", async () => {
    // The sweep runs every 1 ms with no predicate: only the pidfds Bun holds protect its children.
    const ew = watcher({ reapIntervalMs: 1 });
    const bunKids = Array.from({ length: 5 }, (_, i) => Bun.spawn(["sh", "-c", `sleep 0.${i + 1}; exit ${40 + i}`]));
    const [o1, o2] = await orphans("(sleep 0.15; exit 3) >/dev/null & echo $!; (sleep 0.35; exit 4) >/dev/null & echo $!");
    const watched = Promise.all([ew.watch(o1 as number), ew.watch(o2 as number)]);
    // An extra burst of sweeps while the Bun children exit.
    const burst = setInterval(() => reapOrphans(), 1);
    try {
      expect(await Promise.all(bunKids.map((k) => k.exited))).toEqual([40, 41, 42, 43, 44]);
      expect((await watched).map((r) => r.status)).toEqual([3, 4]);
    } finally {
      clearInterval(burst);
    }
  });

  // watch() reads /proc synchronously by default (a shim server), asynchronously for the daemon.
  for (const reads of [undefined, asyncWatchReads]) {
    const how = reads ? " (/proc read asynchronously)" : "";
    test(`watch() of a Bun.spawn child reads its status without reaping it${how}`, async () => {
      const ew = watcher({ reapIntervalMs: 0, reads });
      const k = Bun.spawn(["sh", "-c", "sleep 0.1; exit 6"]);
      const r = ew.watch(k.pid);
      expect(await k.exited).toBe(6);
      // Either we saw it first (WNOWAIT: 6) or Bun reaped it first (255): Bun's code is intact.
      expect([6, 255]).toContain((await r).status);
    });

    test(`a watched pid that is not our child: status read from /proc, left for its parent${how}`, async () => {
      const ew = watcher({ reapIntervalMs: 0, reads });
      // The background job's parent execs sleep, which never waits: the zombie stays its child.
      const sh = Bun.spawn(["sh", "-c", "(sleep 0.05; exit 3) >/dev/null & echo $!; exec sleep 0.5"], { stdout: "pipe" });
      const reader = sh.stdout.getReader();
      const { value } = await reader.read();
      const pid = Number(new TextDecoder().decode(value).trim());
      const r = await ew.watch(pid);
      expect(r).toMatchObject({ status: 3, source: "proc" });
      expect(await sh.exited).toBe(0);
      // Now reparented to us: the sweep reaps it.
      await until("the orphan to be reaped", () => {
        reapOrphans();
        return !existsSync(`/proc/${pid}`);
      });
    });
  }

  test("an orphan nobody watches is reaped by reapOrphans, and a late watch still gets its status", async () => {
    watcher();
    const [pid] = await orphans("(sleep 0.05; exit 12) >/dev/null & echo $!");
    await until("the orphan to be a zombie", () => state(pid as number) === "Z");
    const reaped = reapOrphans();
    expect(reaped.map((o) => o.pid)).toContain(pid as number);
    expect(reaped.find((o) => o.pid === pid)?.status).toBe(12);
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    const late = await watcher().watch(pid as number);
    expect(late).toMatchObject({ status: 12, source: "reaped" });
  });

  test("the timer sweep reaps orphans on its own", async () => {
    const reaped: number[] = [];
    watcher({ reapIntervalMs: 50, onOrphanReaped: (o) => reaped.push(o.pid) });
    const [pid] = await orphans("(sleep 0.05; exit 1) >/dev/null & echo $!");
    await until("the sweep to reap the orphan", () => !existsSync(`/proc/${pid}`));
    expect(reaped).toContain(pid as number);
  });

  test("an exit is seen through SIGCHLD, not the periodic poll", async () => {
    const ew = watcher();
    const pids = await orphans(Array.from({ length: 10 }, () => "sleep 30 >/dev/null & echo $!").join("\n"));
    const lat: number[] = [];
    const sigchldBefore = process.listenerCount("SIGCHLD");
    const { intervals } = await withoutIntervals(async () => {
      for (const pid of pids) {
        const p = ew.watch(pid);
        await until("the pid to be watched", () => ew.isWatched(pid));
        // Listening while something is watched.
        expect(process.listenerCount("SIGCHLD")).toBe(sigchldBefore + 1);
        const t = performance.now();
        process.kill(pid, "SIGKILL");
        expect((await p).status).toBe(137);
        lat.push(performance.now() - t);
      }
    });
    // The watcher did ask for its safety poll, which never ran: SIGCHLD resolved every watch.
    expect(intervals.length).toBeGreaterThan(0);
    expect(process.listenerCount("SIGCHLD")).toBe(sigchldBefore); // and it stops listening when idle
    lat.sort((a, b) => a - b);
    console.log(`kill→resolve latency ms (printed, not asserted): median ${lat[5]?.toFixed(2)} max ${lat[9]?.toFixed(2)}`);
  });

  test("no fd leak over 50 watch cycles", async () => {
    const ew = watcher();
    const fds = () => readdirSync("/proc/self/fd").length;
    // Warm up (Bun's spawn machinery), then count.
    for (const pid of await orphans("(sleep 0.05; exit 0) >/dev/null & echo $!")) await ew.watch(pid);
    await Bun.sleep(20);
    const before = fds();
    for (let i = 0; i < 5; i++) {
      const pids = await orphans(Array.from({ length: 10 }, (_, j) => `(sleep 0.05; exit ${j}) >/dev/null & echo $!`).join("\n"));
      const rs = await Promise.all(pids.map((p) => ew.watch(p)));
      expect(rs.map((r) => r.status)).toEqual(pids.map((_, j) => j));
    }
    await Bun.sleep(20);
    expect(fds()).toBeLessThanOrEqual(before);
    await ew.close();
    // The watcher holds no fd of its own (no thread, no eventfd): closed, it holds none at all.
    expect(fds()).toBeLessThanOrEqual(before);
  });

  test("close() rejects pending watches and the process may exit with nothing watched", async () => {
    const ew = watcher();
    const [pid] = await orphans("sleep 30 >/dev/null & echo $!");
    const p = ew.watch(pid as number);
    await ew.close();
    await expect(p).rejects.toThrow("closed");
    await expect(ew.watch(pid as number)).rejects.toThrow("closed");
    process.kill(pid as number, "SIGKILL");
    await until("the orphan to be a zombie", () => state(pid as number) === "Z");
    reapOrphans();
    expect(existsSync(`/proc/${pid}`)).toBe(false);
  });

  test("an idle watcher does not keep a process alive", async () => {
    const code = `
      import { ExitWatcher } from ${JSON.stringify(`${import.meta.dir}/../../../src/linux/exit-watcher.ts`)};
      import { becomeSubreaper } from ${JSON.stringify(`${import.meta.dir}/../../../src/linux/subreaper.ts`)};
      becomeSubreaper();
      const w = new ExitWatcher();
      const sh = Bun.spawn(["sh", "-c", "(sleep 0.1; exit 5) >/dev/null & echo $!"], { stdout: "pipe" });
      const pid = Number((await new Response(sh.stdout).text()).trim());
      await sh.exited;
      console.log((await w.watch(pid)).status);
    `;
    const p = Bun.spawn([process.execPath, "-e", code], { stdout: "pipe", stderr: "pipe" });
    // Liveness only: a process kept alive is killed, and then has a signalCode.
    const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
    const out = await new Response(p.stdout).text();
    const rc = await p.exited;
    clearTimeout(timer);
    expect(out.trim()).toBe("5");
    expect(p.signalCode).toBeNull(); // it ended on its own
    expect(rc).toBe(0);
  });
});
