// Shared mode over many container lifetimes: BUNWASI_CYCLES (default 1000, the count) create/start/delete
// cycles of a wasm container (`ctr run --rm`, a few at a time) through one daemon, with the
// daemon's RSS, PSS, fds and threads reported before and after. Bounds catch a leak, not a
// speed: the fd and thread counts come back to where they were, nothing is left in the daemon
// or containerd, and RSS ends below a fixed multiple of where it started. Needs root,
// containerd and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { containerStateDir } from "../../src/runtime-v2/paths.ts";
import { mountsUnder } from "../support/containerd.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { IMAGES, type ShimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

// 1000, as the issue asks: 500 took 29 s in a quiet CI run on 2 cores (17/s), and 100 took
// 24 s at load ~30. BUNWASI_CYCLES sets another count.
const CYCLES = Number(process.env.BUNWASI_CYCLES ?? 1000);
/** Cycles in flight at once: ctr mostly waits on containerd. */
const WIDTH = 4;
/**
 * RSS after ÷ RSS before, at most. A leak of 100 KiB per cycle would add ~100 MiB over 1000
 * cycles, about twice the daemon's start. Measured with 1000 cycles: see the log line.
 */
const RSS_FACTOR = 2;

interface Usage {
  rssMiB: number;
  pssMiB: number;
  fds: number;
  threads: number;
}

function usage(pid: number): Usage {
  const kib = (file: string, key: string) =>
    Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(readFileSync(`/proc/${pid}/${file}`, "utf8"))?.[1]);
  return {
    rssMiB: kib("status", "VmRSS") / 1024,
    pssMiB: kib("smaps_rollup", "Pss") / 1024,
    fds: readdirSync(`/proc/${pid}/fd`).length,
    threads: readdirSync(`/proc/${pid}/task`).length,
  };
}

const show = (u: Usage) => `RSS ${u.rssMiB.toFixed(1)} MiB, PSS ${u.pssMiB.toFixed(1)} MiB, ${u.fds} fds, ${u.threads} threads`;

describe(`shared mode: ${CYCLES} create/start/delete cycles`, () => {
  let shared: SharedEnv | undefined;
  let daemon: Daemon;
  let env: ShimEnv;

  beforeAll(async () => {
    shared = await sharedEnv({ prefix: "/tmp/bwy-" });
    ({ daemon, env } = shared);
  }, 300_000);

  afterAll(() => shared?.stop(), 120_000);

  async function listed() {
    const { client, manager } = await daemon.manager();
    try {
      return await manager.listSandboxes({});
    } finally {
      client.close();
    }
  }

  async function cycles(prefix: string, n: number): Promise<string[]> {
    const failures: string[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: WIDTH }, async () => {
        while (next < n) {
          const i = next++;
          const r = await env.run(IMAGES.demo, `${prefix}${i}-${process.pid}`, ["/wasi-demo-app.wasm", "echo", "cycle"], {
            runtime: SHARED_RUNTIME,
          });
          if (r.code !== 0 || r.stdout !== "cycle\nexiting\n")
            failures.push(`#${i}: exit ${r.code}, ${JSON.stringify(r.stdout)} ${r.stderr}`);
        }
      }),
    );
    return failures;
  }

  /** Once every sandbox has closed and the daemon's deferred clean-up (give-back) has run. */
  async function settled(): Promise<Usage> {
    await until("every sandbox to close", async () => (await listed()).sandboxes.length === 0);
    await Bun.sleep(2000);
    return usage(daemon.pid);
  }

  test(
    `${CYCLES} cycles: fds and threads come back, RSS stays below ${RSS_FACTOR}× its start, nothing is left`,
    async () => {
      // Warm: the first runs load the engine, compile the module and start the pools the
      // daemon keeps; what they open is not a per-container cost.
      expect(await cycles("warm", 2 * WIDTH)).toEqual([]);
      const before = await settled();
      const t0 = performance.now();
      const failures = await cycles("cyc", CYCLES);
      const seconds = (performance.now() - t0) / 1000;
      expect(failures).toEqual([]);
      const after = await settled();
      // Reported, for the record (the bench quotes the same figures at 1000).
      console.log(`daemon before ${CYCLES} cycles: ${show(before)}`);
      console.log(`daemon after  ${CYCLES} cycles: ${show(after)} (${seconds.toFixed(1)} s, ${(CYCLES / seconds).toFixed(1)} cycles/s)`);
      const l = await listed();
      expect(l.wasmRunning).toBe(0);
      expect(l.sandboxes).toEqual([]);
      // Threads and fds the daemon holds only while a container runs may still be going away:
      // they must come back to the start, not merely stop growing.
      const fds = await until("the daemon's fds to come back", () => {
        const n = usage(daemon.pid).fds;
        return n <= before.fds ? n : 0;
      });
      expect(fds).toBeLessThanOrEqual(before.fds);
      const threads = await until("the daemon's threads to come back", () => {
        const n = usage(daemon.pid).threads;
        return n <= before.threads + 2 ? n : 0; // Bun's own I/O pool may have grown by one or two
      });
      expect(threads).toBeLessThanOrEqual(before.threads + 2);
      expect(after.rssMiB).toBeLessThan(before.rssMiB * RSS_FACTOR);
      expect(mountsUnder(env.dir)).toEqual([]);
      expect((await env.cd.ctr(["container", "ls", "-q"])).stdout.trim()).toBe("");
      const stateDir = containerStateDir(env.cd.namespace);
      expect(existsSync(stateDir) ? readdirSync(stateDir).filter((d) => d.includes("cyc")) : []).toEqual([]);
    },
    // Bounded by the cycles' count, not a speed claim: at load ~40 a cycle took up to 1 s.
    300_000 + CYCLES * 2000,
  );
});
