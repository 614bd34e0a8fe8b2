// Shared mode's run pools (src/engines/wasmtime/pool.ts): core modules run many to a thread.
// Many idle modules are held on a few threads (the daemon's thread count does not follow their
// number), the demo app among them (it imports path_open: the file guard is in its store); each
// answers Kill and Delete; a busy loop does not stop a sleeping module from
// printing; a module blocked reading stdin nobody writes is killed at once; nothing is left
// after Delete. On each containerd (Debian's 1.6 and the pinned 2.x,
// test/support/containerd-versions.ts), one daemon each. Needs root, containerd and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { feed } from "../support/containerd.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { IMAGES, type ShimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 240_000;
let seq = 0;
const uid = (what: string) => `pool-${what}-${process.pid}-${seq++}`;

for (const c of CONTAINERDS)
  describe(`run pools (shared mode), containerd ${c.name}`, () => {
    let shared: SharedEnv | undefined;
    let daemon: Daemon;
    let env: ShimEnv;
    const threads = () => readdirSync(`/proc/${daemon.pid}/task`).length;
    const ctr = (args: string[]) => env.cd.ctr(args);

    beforeAll(async () => {
      shared = await sharedEnv({ prefix: "/tmp/bwp-", containerd: { binary: c.binary } });
      ({ daemon, env } = shared);
    }, 300_000);

    afterAll(() => shared?.stop(), T);

    async function startIdle(id: string): Promise<void> {
      const r = await ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.tools, id, "/tick.wasm"]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
    }

    const running = (id: string) =>
      until(`${id} running`, async () =>
        (await ctr(["task", "ls"])).stdout.split("\n").some((l) => l.startsWith(id) && l.includes("RUNNING")),
      );

    async function killAndDelete(id: string, signal: string): Promise<void> {
      expect((await ctr(["task", "kill", "-s", signal, id])).code).toBe(0);
      await until(`${id} stopped`, async () =>
        (await ctr(["task", "ls"])).stdout.split("\n").some((l) => l.startsWith(id) && l.includes("STOPPED")),
      );
      expect((await ctr(["task", "delete", id])).code).toBe(0);
      expect((await ctr(["container", "delete", id])).code).toBe(0);
    }

    test(
      "many idle modules on few threads: the daemon's threads do not follow their number; each answers Kill and Delete; nothing left",
      async () => {
        // A first run loads the engine (its threads count once whatever N is).
        const warm = uid("warm");
        await startIdle(warm);
        await killAndDelete(warm, "SIGKILL");
        const fdsBefore = daemon.fdCount();
        const ids = Array.from({ length: 16 }, () => uid("idle"));
        await startIdle(ids[0] as string);
        await startIdle(ids[1] as string);
        const withTwo = threads();
        for (const id of ids.slice(2)) await startIdle(id);
        const withSixteen = threads();
        console.log(`daemon threads: ${withTwo} with 2 idle modules, ${withSixteen} with 16`);
        // A thread per run would add 14; pools add none past one per core.
        expect(withSixteen - withTwo).toBeLessThan(14);
        expect(withSixteen - withTwo).toBeLessThanOrEqual(2);
        for (const id of ids) await killAndDelete(id, "SIGTERM");
        // The pools end once idle; the fds of every run are closed.
        await until("the daemon's fds back", () => daemon.fdCount() <= fdsBefore);
      },
      T,
    );

    test(
      "the demo app (it opens files: the file guard in its store) sleeping, 16 of them: pooled, the daemon's threads do not follow their number; each answers Kill and Delete",
      async () => {
        const startSleep = async (id: string) => {
          const r = await ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, "/wasi-demo-app.wasm", "sleep", "3600"]);
          expect(r.stderr).toBe("");
          expect(r.code).toBe(0);
          await running(id);
        };
        const warm = uid("demo-warm");
        await startSleep(warm);
        await killAndDelete(warm, "SIGKILL");
        const fdsBefore = daemon.fdCount();
        const ids = Array.from({ length: 16 }, () => uid("demo"));
        await startSleep(ids[0] as string);
        await startSleep(ids[1] as string);
        const withTwo = threads();
        for (const id of ids.slice(2)) await startSleep(id);
        const withSixteen = threads();
        console.log(`daemon threads: ${withTwo} with 2 sleeping demo apps, ${withSixteen} with 16`);
        // A thread per run would add 14; pools add none past one per core.
        expect(withSixteen - withTwo).toBeLessThanOrEqual(2);
        for (const id of ids) {
          expect((await ctr(["task", "kill", "-s", "SIGTERM", id])).code).toBe(0);
          await until(`${id} stopped`, async () =>
            (await ctr(["task", "ls"])).stdout.split("\n").some((l) => l.startsWith(id) && l.includes("STOPPED")),
          );
          const del = await ctr(["task", "delete", id]);
          expect(del.code).toBe(0);
          expect((await ctr(["container", "delete", id])).code).toBe(0);
        }
        await until("the daemon's fds back", () => daemon.fdCount() <= fdsBefore);
      },
      T,
    );

    test(
      "a busy loop does not stop a sleeping module on the same pool from printing; kills: 137 busy, 143 the sleeper",
      async () => {
        // Two busy loops (one per pool on two cores), then a ticker that shares a pool with one.
        const busy = [uid("busy"), uid("busy")];
        for (const id of busy) expect((await ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.tools, id, "/busy.wasm"])).code).toBe(0);
        const tick = uid("tick");
        const p = env.cd.ctrSpawn(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.tools, tick, "/tick.wasm"]);
        const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
        let seen = "";
        while ((seen.match(/t\n/g) ?? []).length < 20) {
          const { value, done } = await reader.read();
          if (done) break;
          seen += new TextDecoder().decode(value);
        }
        expect((seen.match(/t\n/g) ?? []).length).toBeGreaterThanOrEqual(20);
        reader.releaseLock();
        expect((await ctr(["task", "kill", "-s", "SIGTERM", tick])).code).toBe(0);
        expect(await p.exited).toBe(143);
        for (const id of busy) await killAndDelete(id, "SIGKILL");
      },
      T,
    );

    test(
      "modules blocked reading stdin nobody writes and writing to a stdout nobody reads: others run on; each killed at once (137)",
      async () => {
        // Nobody reads a detached task's output: bigout fills its fifo and waits for room.
        const stuck = uid("bigout");
        expect((await ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.tools, stuck, "/bigout.wasm", "100"])).code).toBe(0);
        const cat = uid("cat");
        const p = env.cd.ctrSpawn(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.tools, cat, "/cat.wasm"], { stdin: "pipe" });
        await running(cat);
        const other = uid("echo");
        // A pooled module (cat, fed) on the same pools.
        const fed = env.cd.ctrSpawn(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.tools, other, "/cat.wasm"], { stdin: "pipe" });
        await running(other);
        const echoed = await feed(fed, "still here\n");
        expect(echoed.stdout).toBe("still here\n");
        expect(echoed.code).toBe(0);
        expect((await ctr(["task", "kill", "-s", "SIGKILL", cat])).code).toBe(0);
        expect(await p.exited).toBe(137);
        await killAndDelete(stuck, "SIGKILL");
      },
      T,
    );
  });
