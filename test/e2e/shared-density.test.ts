// Shared mode holding many containers at once (issue 17 item 1, the CI case): BUNWASI_DENSITY_N
// (default 1000) idle wasm containers (each a module asleep in poll_oneoff) created and started
// 8 at a time through one daemon, on containerd 1.6 and the pinned 2.x. All must be RUNNING at
// once; each is then killed and its /tasks/exit seen by containerd; all are deleted; and then
// nothing is left: the daemon's fds and threads back to where they were before the first, no
// mount, no work dir, no shim process. No timing bound: the figures (rates, memory) are the
// density benchmark's (bench/shared/density.ts); the elapsed times are logged for the record.
// Needs root, containerd and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { containerStateDir } from "../../src/runtime-v2/paths.ts";
import { type ExitWatch, mountsUnder, processesUsing } from "../support/containerd.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { chunks, pool } from "../support/ramp.ts";
import { IMAGES, type ShimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const N = Number(process.env.BUNWASI_DENSITY_N ?? 1000);
/** Calls in flight at once, as the rate is measured. */
const WIDTH = 8;
/** Ids per `ctr task kill`/`delete` call: ctr's own start would otherwise be most of the work. */
const PER_CALL = 25;

/** Waits as long as N containers may take under load, looking every 100 ms. */
const waitFor = <T>(what: string, f: () => T | Promise<T>, timeoutMs = 120_000) => until(what, f, timeoutMs, 100);

const threadsOf = (pid: number) => readdirSync(`/proc/${pid}/task`).length;
const pssMiB = (pid: number) => Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1]) / 1024;

for (const c of CONTAINERDS) {
  describe(`shared mode: ${N} idle wasm containers at once, containerd ${c.name}`, () => {
    let shared: SharedEnv | undefined;
    let daemon: Daemon;
    let env: ShimEnv;
    /** containerd's /tasks/exit events: container id → exit status. */
    let events: ExitWatch | undefined;
    const exits = () => (events as ExitWatch).exits;

    beforeAll(async () => {
      shared = await sharedEnv({ prefix: "/tmp/bwn-", containerd: { binary: c.binary } });
      ({ daemon, env } = shared);
      events = env.cd.watchExits();
    }, 300_000);

    afterAll(async () => {
      events?.stop();
      await shared?.stop();
    }, 300_000);

    async function sandboxes() {
      const { client, manager } = await daemon.manager();
      try {
        return await manager.listSandboxes({});
      } finally {
        client.close();
      }
    }
    /** `ctr task ls`: id → status. */
    const taskStatuses = async () => new Map([...(await env.cd.taskList(120_000))].map(([id, [, status]]) => [id, status]));
    /** Work dirs of this namespace's containers (the daemon's and the thin shim's state). */
    const workDirs = () => {
      const d = containerStateDir(env.cd.namespace);
      return existsSync(d) ? readdirSync(d) : [];
    };
    /** Processes of this containerd other than containerd itself and our `ctr events`: shims. */
    const strays = () => processesUsing(env.dir).filter((p) => p.pid !== env.cd.pid && p.pid !== events?.pid);

    test(
      `${N} created and started ${WIDTH} at a time, all RUNNING at once; each killed and its exit seen; all deleted; nothing left`,
      async () => {
        // Warm: the engine loads and the module compiles once per daemon; its exit event also
        // shows that `ctr events` is subscribed.
        const warm = await env.run(IMAGES.demo, "warm", ["/wasi-demo-app.wasm", "echo", "x"], { runtime: SHARED_RUNTIME });
        expect(warm.code).toBe(0);
        await waitFor("the warm-up's exit event", () => exits().has("warm"), 30_000);
        await waitFor("the warm-up's sandbox to close", async () => (await sandboxes()).sandboxes.length === 0);
        await Bun.sleep(1000);
        const before = { fds: daemon.fdCount(), threads: threadsOf(daemon.pid), pss: pssMiB(daemon.pid) };
        // containerd's rootfs mounts are under its dir, the daemon's views of them under the work dirs.
        const mounts = () => [...mountsUnder(env.dir), ...mountsUnder(containerStateDir(env.cd.namespace))];
        const mountsBefore = mounts();
        const workBefore = workDirs();
        expect(strays()).toEqual([]);

        const ids = Array.from({ length: N }, (_, i) => `n${i}`);
        const t0 = performance.now();
        const failures: string[] = [];
        await pool(ids, WIDTH, async (id) => {
          const r = await env.cd.ctr(
            ["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, "/wasi-demo-app.wasm", "sleep", "36000000"],
            { timeoutMs: 120_000 },
          );
          if (r.code !== 0) failures.push(`${id}: ctr run -d → ${r.code}: ${r.stderr.trim().slice(-300)}`);
        });
        const startedS = (performance.now() - t0) / 1000;
        expect(failures.slice(0, 5)).toEqual([]);

        // All at once: containerd sees every task RUNNING, the daemon runs every module.
        const statuses = await taskStatuses();
        expect(ids.filter((id) => statuses.get(id) !== "RUNNING")).toEqual([]);
        const held = await sandboxes();
        expect(held.wasmRunning).toBe(N);
        expect(held.sandboxes.length).toBe(N);
        const withN = {
          fds: daemon.fdCount(),
          threads: threadsOf(daemon.pid),
          pss: pssMiB(daemon.pid),
          mounts: mounts().length,
        };
        expect(exits().size).toBe(1); // none of the N exited on its own

        const t1 = performance.now();
        await pool(ids, WIDTH, async (id) => {
          const r = await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
          if (r.code !== 0) failures.push(`${id}: ctr task kill → ${r.code}: ${r.stderr.trim()}`);
        });
        expect(failures.slice(0, 5)).toEqual([]);
        await waitFor(`the ${N} exit events`, () => ids.every((id) => exits().has(id)));
        const killedS = (performance.now() - t1) / 1000;
        expect(ids.filter((id) => exits().get(id) !== 137).map((id) => `${id}: ${exits().get(id)}`)).toEqual([]);

        const t2 = performance.now();
        await pool(chunks(ids, PER_CALL), WIDTH, async (some) => {
          for (const what of ["task", "container"]) {
            const r = await env.cd.ctr([what, "delete", ...some], { timeoutMs: 120_000 });
            if (r.code !== 0) failures.push(`${some[0]}…: ctr ${what} delete → ${r.code}: ${r.stderr.trim().slice(-300)}`);
          }
        });
        const deletedS = (performance.now() - t2) / 1000;
        expect(failures.slice(0, 5)).toEqual([]);
        expect((await env.cd.ctr(["container", "ls", "-q"])).stdout.trim()).toBe("");

        // Nothing left: the daemon serves no sandbox, and what it held for them is gone.
        await waitFor("every sandbox to close", async () => (await sandboxes()).sandboxes.length === 0);
        const fds = await waitFor("the daemon's fds to come back", () => {
          const n = daemon.fdCount();
          return n <= before.fds ? n : 0;
        });
        const threads = await waitFor("the daemon's threads to come back", () => {
          const n = threadsOf(daemon.pid);
          return n <= before.threads + 2 ? n : 0; // Bun's own I/O pool may have grown by one or two
        });
        expect(fds).toBeLessThanOrEqual(before.fds);
        expect(threads).toBeLessThanOrEqual(before.threads + 2);
        expect((await sandboxes()).wasmRunning).toBe(0);
        expect(mounts()).toEqual(mountsBefore);
        expect(workDirs()).toEqual(workBefore);
        expect(await waitFor("no shim process left", () => strays().length === 0 || null, 60_000)).toBe(true);
        console.log(
          `containerd ${c.name}: ${N} started in ${startedS.toFixed(1)} s (${(N / startedS).toFixed(1)}/s), killed and every exit seen in ${killedS.toFixed(1)} s, deleted in ${deletedS.toFixed(1)} s; ` +
            `daemon before: ${before.fds} fds, ${before.threads} threads, PSS ${before.pss.toFixed(0)} MiB; with ${N}: ${withN.fds} fds, ${withN.threads} threads, PSS ${withN.pss.toFixed(0)} MiB, ${withN.mounts} mounts; ` +
            `after: ${fds} fds, ${threads} threads, PSS ${pssMiB(daemon.pid).toFixed(0)} MiB`,
        );
      },
      // A bound on a hang, not on speed: a container took up to 1 s at load ~40.
      300_000 + N * 1000,
    );
  });
}
