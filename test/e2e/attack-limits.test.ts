// Attacks on memory and CPU limits (issue 16, items 2 and 3), in both modes, on a private
// containerd of each version (Debian's 1.6 and the pinned 2.x, test/support/containerd-versions.ts):
// normal mode (io.containerd.wasmtime.v1: the executor under runc, in a cgroup) and shared mode
// (io.containerd.wasmtimed.v1: a thread of the daemon this file starts, with
// --default-memory-limit 64Mi).
//  - Memory: under a 64 MiB limit, four memories grown to 60 MiB each (multi-memory) and a
//    table grown to 24 million elements fail their grow (exit 12), four memories of 60 MiB at
//    start are not run (125, saying why); the daemon's peak resident memory grows by less than
//    the limit meanwhile. Before: shared mode ran them to exit 0 (the daemon 248 / 194 MiB
//    larger), normal mode was killed by the cgroup (137).
//  - A wasm container without a limit in shared mode gets the daemon's default (the run and
//    Stats' limit).
//  - CPU: a busy module with a quota of 0.1 is throttled (Stats' cpu.throttling: the cgroup's
//    counts in normal mode, the engine's in shared mode); one without a quota is not until an
//    Update (over ttrpc, as containerd's CRI plugin sends it) gives it one.
//  - An Update to no memory limit (-1) of a running module does not unbound it: its grows
//    stay bounded (normal mode: by its store, whose limit is the one it started with; shared
//    mode: by the daemon's default). Before: shared mode refused any memory Update of a
//    running module.
// Needs root, containerd and runc. Figures (the daemon's growth) are printed, never asserted
// beyond the limit itself; no assertion depends on timing.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { appendFileSync, existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeImageArchive } from "../../tools/image/index.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { ctrTasks, fileText } from "../support/ctr-tasks.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { GROW_STEPS_WAT } from "../support/grow-steps.ts";
import { statusBytes } from "../support/processes.ts";
import { RUNTIME, type ShimEnv, WASM } from "../support/shim-env.ts";
import { until as waitUntil } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 120_000;
const MiB = 2 ** 20;
const LIMIT = 64 * MiB;
const IMAGE = "docker.io/library/bunwasi-attack-limits:latest";
const MODULES = ["mem4", "mem4-initial", "table24m", "busy"];
let seq = 0;
const uid = (what: string) => `al-${what}-${process.pid}-${seq++}`;

/** Liveness only (fail instead of hang), never a bound on how fast anything is. */
const until = <T>(what: string, f: () => T | Promise<T>, timeoutMs = 60_000) => waitUntil(what, f, timeoutMs, 50);

/** Figures measured here (printed, and emptied, at the end of each containerd's block). */
const figures: string[] = [];

for (const c of CONTAINERDS) {
  describe(`memory and CPU limits in both modes, containerd ${c.name}`, () => {
    let shared: SharedEnv | undefined;
    let dir: string;
    let daemon: Daemon;
    let env: ShimEnv;

    beforeAll(async () => {
      shared = await sharedEnv({ prefix: "/tmp/bwal-", daemonArgs: ["--default-memory-limit", "64Mi"], containerd: { binary: c.binary } });
      ({ dir, daemon, env } = shared);
      const archive = join(dir, "attack.tar");
      writeFileSync(join(dir, "grow.wat"), GROW_STEPS_WAT);
      writeImageArchive(archive, {
        name: IMAGE,
        files: [
          ...MODULES.map((m) => ({ path: `/${m}.wasm`, source: join(WASM, `${m}.wasm`) })),
          { path: "/grow.wat", source: join(dir, "grow.wat") },
        ],
        config: { entrypoint: ["/busy.wasm"] },
      });
      const r = await env.cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import: ${r.stderr}`);
      // The daemon loads its engine on its first run: done here, not counted as an attack's growth.
      await env.run(IMAGE, uid("warm"), ["/mem4.wasm"], { runtime: SHARED_RUNTIME, extra: ["--memory-limit", String(MiB)] });
    }, 300_000);

    afterAll(async () => {
      for (const f of figures.splice(0)) console.log(f);
      await shared?.stop();
    }, T);

    const tasks = ctrTasks(
      () => env.cd,
      () => dir,
    );

    /** The task's metrics as containerd reports them (cgroup v1 shape). */
    async function metrics(id: string): Promise<{
      cpu?: { throttling?: { periods?: number; throttled_periods?: number; throttled_time?: number } };
      memory?: { usage?: { limit?: number } };
    }> {
      return JSON.parse(await tasks.ctrOk(["task", "metrics", "--format", "json", id]));
    }

    const stop = (id: string) => tasks.killAndRemove(id);

    for (const mode of [
      { name: "normal", runtime: RUNTIME },
      { name: "shared", runtime: SHARED_RUNTIME },
    ] as const) {
      const shared = mode.name === "shared";
      const run = (id: string, args: string[], extra: string[] = []) => env.run(IMAGE, id, args, { runtime: mode.runtime, extra });

      /**
       * Runs `f`, and in shared mode measures how much the daemon's peak resident memory grew
       * meanwhile (its high-water mark reset first: /proc/PID/clear_refs, 5).
       */
      async function daemonGrowth<T>(what: string, f: () => Promise<T>): Promise<{ result: T; growth?: number }> {
        if (!shared) return { result: await f() };
        writeFileSync(`/proc/${daemon.pid}/clear_refs`, "5");
        const before = statusBytes(daemon.pid, "VmRSS");
        const result = await f();
        const growth = statusBytes(daemon.pid, "VmHWM") - before;
        figures.push(`shared, containerd ${c.name}: ${what}: the daemon's peak RSS grew by ${(growth / MiB).toFixed(1)} MiB`);
        return { result, growth };
      }

      describe(`${mode.name} mode`, () => {
        test(
          "four memories (multi-memory) grown to 60 MiB each under a 64 MiB limit: the first grow fails (exit 12); the daemon grows by less than the limit",
          async () => {
            const { result, growth } = await daemonGrowth("mem4 under 64 MiB", () =>
              run(uid("mem4"), ["/mem4.wasm"], ["--memory-limit", String(LIMIT)]),
            );
            expect(result.stderr).toBe("");
            expect(result.code).toBe(12);
            if (shared) expect(growth).toBeLessThan(LIMIT);
          },
          T,
        );

        test(
          "a table grown to 24 million elements under a 64 MiB limit: the grow fails (exit 12); the daemon grows by less than the limit",
          async () => {
            const { result, growth } = await daemonGrowth("table24m under 64 MiB", () =>
              run(uid("table"), ["/table24m.wasm"], ["--memory-limit", String(LIMIT)]),
            );
            expect(result.stderr).toBe("");
            expect(result.code).toBe(12);
            if (shared) expect(growth).toBeLessThan(LIMIT);
          },
          T,
        );

        test(
          "four memories of 60 MiB from the start under a 64 MiB limit: not run (125), saying why",
          async () => {
            const r = await run(uid("mem4i"), ["/mem4-initial.wasm"], ["--memory-limit", String(LIMIT)]);
            expect(r.stderr).toContain(
              "memory limit: the module's 4 linear memories and 0 tables need 240 MiB at start, more than the container's limit of 64 MiB",
            );
            expect(r.code).toBe(125);
          },
          T,
        );

        test(
          "a busy module with a CPU quota of 0.1 is throttled (Stats' cpu.throttling counts it)",
          async () => {
            const id = uid("quota");
            await tasks.runDetached(id, ["/busy.wasm"], IMAGE, mode.runtime, ["--cpu-quota", "10000", "--cpu-period", "100000"]);
            await tasks.waitStatus(id, "RUNNING");
            // ctr's JSON leaves zero fields out: the first figures may be an empty throttling.
            const t = await until("a throttled period in the task's metrics", async () => {
              const thr = (await metrics(id)).cpu?.throttling;
              return (thr?.throttled_periods ?? 0) > 0 ? thr : undefined;
            });
            expect(t.periods).toBeGreaterThan(0);
            await stop(id);
          },
          T,
        );

        test(
          "a busy module without a quota is not throttled; an Update giving it one is (on the running task)",
          async () => {
            const id = uid("update");
            await tasks.runDetached(id, ["/busy.wasm"], IMAGE, mode.runtime);
            await tasks.waitStatus(id, "RUNNING");
            expect((await metrics(id)).cpu?.throttling?.throttled_periods ?? 0).toBe(0);
            await tasks.update(id, { cpu: { quota: 10_000, period: 100_000 } });
            await until(
              "a throttled period after the Update",
              async () => ((await metrics(id)).cpu?.throttling?.throttled_periods ?? 0) > 0,
            );
            await stop(id);
          },
          T,
        );

        test(
          "an Update to no memory limit (-1) does not unbound a running module: its grows stay bounded (normal: its store's limit from start; shared: the daemon's default)",
          async () => {
            const id = uid("unbound");
            const log = await tasks.runDetached(id, ["/grow.wat"], IMAGE, mode.runtime, ["--memory-limit", String(32 * MiB)]);
            await tasks.waitStatus(id, "RUNNING");
            const n = join(env.cd.state, "io.containerd.runtime.v2.task", env.cd.namespace, id, "rootfs", "n");
            writeFileSync(n, "");
            await tasks.update(id, { memory: { limit: -1 } });
            // One MiB per byte appended (grow-steps), all asked at once: it starts with 1 MiB.
            appendFileSync(n, "x".repeat(80));
            const answers = await until("80 answers", () => {
              const l = fileText(log).split("\n").filter(Boolean);
              return l.length >= 80 ? l : undefined;
            });
            const held = 1 + answers.indexOf("-");
            expect(answers.slice(held - 1).every((a) => a === "-")).toBe(true);
            expect(held).toBe(shared ? LIMIT / MiB : 32);
            await stop(id);
          },
          T,
        );

        if (shared) {
          test(
            "a wasm container without a memory limit gets the daemon's default (64Mi here): the attack fails its grow, Stats reports the limit",
            async () => {
              const { result, growth } = await daemonGrowth("mem4 with no limit (default 64Mi)", () => run(uid("dflt"), ["/mem4.wasm"]));
              expect(result.stderr).toBe("");
              expect(result.code).toBe(12);
              expect(growth).toBeLessThan(LIMIT);
              const id = uid("dflt-stats");
              await tasks.runDetached(id, ["/busy.wasm"], IMAGE, mode.runtime);
              await tasks.waitStatus(id, "RUNNING");
              expect((await until("a memory figure", async () => (await metrics(id)).memory?.usage))?.limit).toBe(LIMIT);
              await stop(id);
            },
            T,
          );
        }
      });
    }
  });
}
