// The shared-mode daemon gives back what its containers held (issue 17 item 1: "the daemon back
// within 10% of its starting PSS after all are deleted"): BUNWASI_GIVE_BACK_N (default 500)
// idle wasm containers (the demo app's `sleep`, which the run pools take) created and started 8
// at a time, all held at once, killed and deleted; the daemon's memory after is within 10% of
// what it was before the first of them. On containerd 1.6 and the pinned 2.x.
//
// "Before" is read as the density benchmark reads its start: after one container has run (the
// engine is loaded on the first run, once per daemon). Both points are read once the daemon has
// logged a give-back pass with no sandbox, no wasm run and no run thread left (its log line,
// src/daemon/give-back.ts), and no shim of ours is alive: no sleep, no timing.
//
// The figure compared is the daemon's anonymous memory plus every file page it has resident,
// each counted whole: its PSS as it would be with no other process sharing its files. PSS itself
// (logged too) splits a file page among the processes that map it, and libwasmtime.so is mapped
// by every daemon and executor on the machine: on a machine that runs anything else, the
// daemon's PSS moved by ±10 MiB between two reads with nothing done in it (measured with
// bench/shared/give-back.ts), which says nothing of what the daemon kept.
// Needs root, containerd and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { GAVE_BACK } from "../../src/daemon/give-back.ts";
import { processesUsing } from "../support/containerd.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { chunks, pool } from "../support/ramp.ts";
import { IMAGES, type ShimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const N = Number(process.env.BUNWASI_GIVE_BACK_N ?? 500);
/** Calls in flight at once, as the density benchmark makes them. */
const WIDTH = 8;
/** Ids per `ctr task`/`container delete` call: ctr's own start would otherwise be most of the work. */
const PER_CALL = 25;
/** Liveness only (a stuck step fails instead of hanging), never a bound on speed. */
const STEP_MS = 600_000;
const IDLE = ["/wasi-demo-app.wasm", "sleep", "36000000"];

interface Memory {
  /** What the daemon has resident, each page counted whole (anonymous + file RSS), KiB. */
  whole: number;
  pss: number;
  pssAnon: number;
}

function memory(pid: number): Memory {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(text)?.[1]);
  return { whole: kib("Rss") - kib("Anonymous") + kib("Pss_Anon"), pss: kib("Pss"), pssAnon: kib("Pss_Anon") };
}
const mib = (k: number) => (k / 1024).toFixed(1);
const show = (m: Memory) => `${mib(m.whole)} MiB (PSS ${mib(m.pss)}, Pss_Anon ${mib(m.pssAnon)})`;

for (const c of CONTAINERDS) {
  describe(`shared mode: the daemon's memory back within 10% after ${N} idle wasm containers are deleted, containerd ${c.name}`, () => {
    let shared: SharedEnv | undefined;
    let daemon: Daemon;
    let env: ShimEnv;

    beforeAll(async () => {
      shared = await sharedEnv({ prefix: "/tmp/bwg-", containerd: { binary: c.binary } });
      ({ daemon, env } = shared);
    }, 300_000);

    afterAll(() => shared?.stop(), 300_000);

    /** The daemon's give-back passes that found nothing left to serve. */
    const emptyPasses = () =>
      daemon
        .log()
        .split("\n")
        .filter((l) => l.includes(GAVE_BACK) && l.includes(" 0 sandboxes, 0 wasm runs, 0 run threads")).length;
    /** Shim processes of this containerd (not containerd itself): they map the daemon's binary. */
    const shims = () => processesUsing(env.dir).filter((p) => p.pid !== env.cd.pid);

    /** The daemon's memory at its first pass with nothing left after `seen` such passes, with no shim alive. */
    async function settled(seen: number): Promise<Memory> {
      await until("no shim left", () => shims().length === 0, STEP_MS, 100);
      await until("the daemon's give-back pass with nothing left to serve", () => emptyPasses() > seen, STEP_MS, 100);
      return memory(daemon.pid);
    }

    async function running(): Promise<number> {
      const { client, manager } = await daemon.manager();
      try {
        return (await manager.listSandboxes({})).wasmRunning;
      } finally {
        client.close();
      }
    }

    test(
      `${N} held at once, killed and deleted: within 10% of the start`,
      async () => {
        let seen = emptyPasses();
        const warm = await env.run(IMAGES.demo, "warm", ["/wasi-demo-app.wasm", "echo", "x"], { runtime: SHARED_RUNTIME });
        expect(warm.code).toBe(0);
        const before = await settled(seen);

        const ids = Array.from({ length: N }, (_, i) => `gb${i}`);
        const failures: string[] = [];
        await pool(ids, WIDTH, async (id) => {
          const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, ...IDLE], { timeoutMs: 120_000 });
          if (r.code !== 0) failures.push(`${id}: ctr run -d → ${r.code}: ${r.stderr.trim().slice(-300)}`);
        });
        expect(failures.slice(0, 5)).toEqual([]);
        expect(await running()).toBe(N);
        const held = memory(daemon.pid);

        seen = emptyPasses();
        // One id per call: `ctr task kill` takes one container.
        await pool(ids, WIDTH, async (id) => {
          const r = await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
          if (r.code !== 0) failures.push(`${id}: ctr task kill → ${r.code}: ${r.stderr.trim().slice(-300)}`);
        });
        await until("every run to end", async () => (await running()) === 0, STEP_MS, 100);
        await pool(chunks(ids, PER_CALL), WIDTH, async (some) => {
          for (const what of ["task", "container"]) {
            const r = await env.cd.ctr([what, "delete", ...some], { timeoutMs: 300_000 });
            if (r.code !== 0) failures.push(`${some[0]}…: ctr ${what} delete → ${r.code}: ${r.stderr.trim().slice(-300)}`);
          }
        });
        expect(failures.slice(0, 5)).toEqual([]);
        expect((await env.cd.ctr(["container", "ls", "-q"])).stdout.trim()).toBe("");
        const after = await settled(seen);

        const change = ((after.whole - before.whole) / before.whole) * 100;
        const figures = `before ${show(before)}, with ${N} ${show(held)}, after ${show(after)}: ${change >= 0 ? "+" : ""}${change.toFixed(1)}%`;
        console.log(`containerd ${c.name}: the daemon's memory ${figures}`);
        expect(after.whole <= before.whole * 1.1 ? "within 10%" : `not within 10%: ${figures}`).toBe("within 10%");
      },
      4 * STEP_MS,
    );
  });
}
