// Overflow (issue 17 item 1, src/daemon/overflow.ts): a daemon at its fd budget starts a
// successor that takes the new pods while it keeps serving its own. A tiny budget
// (--fd-budget, the test and operator knob) makes each daemon full after a few containers:
// wasm containers are started one at a time until three daemons hold some (a successor
// overflows in turn). All are RUNNING at once, each in the daemon whose pid is its task's;
// each is killed (SIGKILL, containerd's /tasks/exit says 137), waited for and deleted; each
// full daemon exits with its last sandbox; nothing is left (sandbox and manager sockets of
// the exited ones, work dirs, mounts, shim processes), and the last one serves on. On
// containerd 1.6 and the pinned 2.x. Needs root, containerd and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { processStart } from "../../src/daemon/daemon-files.ts";
import { daemonLockPath } from "../../src/daemon/lock.ts";
import { containerStateDir } from "../../src/runtime-v2/paths.ts";
import { type ExitWatch, mountsUnder, processesUsing } from "../support/containerd.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { DAEMON, type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { IMAGES, type ShimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

/** Daemons the containers must spread over: the first, its successor, and that one's. */
const DAEMONS = 3;
/** Most containers started before giving up on seeing DAEMONS daemons (a few fit in each). */
const MAX_CONTAINERS = 60;
const T = 600_000;

/** Alive and not a zombie. */
const alive = (pid: number) => processStart(pid) !== undefined;

for (const c of CONTAINERDS) {
  describe(`shared mode: overflow into successor daemons at a tiny fd budget, containerd ${c.name}`, () => {
    let shared: SharedEnv | undefined;
    let daemonDir: string;
    let a: Daemon;
    let env: ShimEnv;
    /** Every daemon pid seen, in order of appearance (the successors are stopped by shared.stop()). */
    const daemons: number[] = [];
    /** containerd's /tasks/exit events: container id → exit status. */
    let events: ExitWatch | undefined;

    beforeAll(async () => {
      // Daemon A's own fds after its start are a few dozen; 16 a container (src/daemon/nofile.ts):
      // at 100, each daemon is full after a few containers.
      shared = await sharedEnv({ prefix: "/tmp/bwo-", daemonArgs: ["--fd-budget", "100"], containerd: { binary: c.binary } });
      ({ daemonDir, daemon: a, env } = shared);
      daemons.push(a.pid);
      events = env.cd.watchExits();
    }, 300_000);

    afterAll(async () => {
      events?.stop();
      await shared?.stop();
    }, T);

    const tasks = () => env.cd.taskList();
    const exits = () => (events as ExitWatch).exits;
    const sandboxSockets = () => readdirSync(join(daemonDir, "sandboxes"));
    const workDirs = () => {
      const d = containerStateDir(env.cd.namespace);
      return existsSync(d) ? readdirSync(d) : [];
    };
    const strays = () => processesUsing(env.dir).filter((p) => p.pid !== env.cd.pid && p.pid !== events?.pid);

    test(
      `containers overflow into ${DAEMONS} daemons; all RUNNING; each killed, waited for and deleted; the full daemons exit when empty; nothing left`,
      async () => {
        const probe = "probe";
        expect((await env.run(IMAGES.demo, probe, ["/wasi-demo-app.wasm", "echo", "x"], { runtime: SHARED_RUNTIME })).code).toBe(0);
        await until("ctr events to report the probe's exit", () => exits().has(probe));
        const mountsBefore = [...mountsUnder(env.dir), ...mountsUnder(containerStateDir(env.cd.namespace))];
        const workBefore = workDirs();

        // One at a time, each RUNNING before the next: where each lands is its task's pid.
        const ids: string[] = [];
        const owner = new Map<string, number>();
        while (new Set(owner.values()).size < DAEMONS && ids.length < MAX_CONTAINERS) {
          const id = `o${ids.length}`;
          ids.push(id);
          const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, "/wasi-demo-app.wasm", "sleep", "600000"]);
          expect({ id, code: r.code, stderr: r.stderr }).toEqual({ id, code: 0, stderr: "" });
          const [pid, status] = (await until(`${id} to run`, async () => {
            const t = (await tasks()).get(id);
            return t?.[1] === "RUNNING" ? t : undefined;
          })) as [number, string];
          expect(status).toBe("RUNNING");
          owner.set(id, pid);
          if (!daemons.includes(pid)) daemons.push(pid);
        }
        // Three daemons, in the order they took over; each one a daemon of this directory.
        expect(daemons.length).toBe(DAEMONS);
        for (const pid of daemons) {
          expect(statSync(`/proc/${pid}/exe`).ino).toBe(statSync(DAEMON).ino);
          expect(existsSync(join(daemonDir, "daemons", `${pid}.sock`))).toBe(true);
        }
        const [first, second, last] = daemons as [number, number, number];
        expect(a.log()).toContain(`at the budget of 100: daemon ${second} takes the new pods`);
        expect(a.log()).toContain(`at the budget of 100: daemon ${last} takes the new pods`);
        expect(readFileSync(daemonLockPath(a.socket), "utf8")).toBe(`${last} ${a.socket}\n`);
        // Containers land in order: the first daemon's, then its successor's, then the last's.
        const order = ids.map((id) => daemons.indexOf(owner.get(id) as number));
        expect(order).toEqual([...order].sort((x, y) => x - y));

        // All at once, RUNNING, each where it was started; none has exited.
        const all = await tasks();
        for (const id of ids) expect({ id, task: all.get(id) }).toEqual({ id, task: [owner.get(id) as number, "RUNNING"] });
        expect(exits().size).toBe(1);
        // Each sandbox socket names the daemon that serves it.
        for (const pid of daemons) {
          const held = ids.filter((id) => owner.get(id) === pid).length;
          expect(sandboxSockets().filter((s) => s.endsWith(`.${pid}.sock`)).length).toBe(held);
        }

        // Each killed, waited for, deleted (the old daemons answer on their sandboxes' sockets).
        for (const id of ids) {
          const k = await env.cd.ctr(["tasks", "kill", "-s", "SIGKILL", id]);
          expect({ id, code: k.code, stderr: k.stderr }).toEqual({ id, code: 0, stderr: "" });
          await until(`${id}'s exit event`, () => exits().has(id));
          expect({ id, status: exits().get(id) }).toEqual({ id, status: 137 });
          expect((await tasks()).get(id)?.[1]).toBe("STOPPED");
          // (ctr warns of the non-zero status on stderr.)
          const d = await env.cd.ctr(["tasks", "delete", id]);
          expect({ id, code: d.code }).toEqual({ id, code: 0 });
          const cr = await env.cd.ctr(["containers", "rm", id]);
          expect({ id, code: cr.code, stderr: cr.stderr }).toEqual({ id, code: 0, stderr: "" });
        }
        expect((await env.cd.ctr(["containers", "ls", "-q"])).stdout.trim()).toBe("");

        // The full ones exit with their last sandbox; the last one serves on.
        expect(await a.proc.exited).toBe(0);
        await until(`daemon ${second} to exit`, () => !alive(second));
        expect(a.log()).toContain("handed over and every sandbox deleted: exiting");
        expect(alive(last)).toBe(true);
        expect(alive(first)).toBe(false);

        // Nothing left: sockets (only the last daemon's own manager socket), work dirs, mounts, shims.
        await until("every sandbox socket to go", () => sandboxSockets().length === 0);
        expect(readdirSync(join(daemonDir, "daemons"))).toEqual([`${last}.sock`]);
        expect(workDirs()).toEqual(workBefore);
        expect([...mountsUnder(env.dir), ...mountsUnder(containerStateDir(env.cd.namespace))]).toEqual(mountsBefore);
        expect(await until("no shim process left", () => strays().length === 0 || null, 60_000)).toBe(true);

        // A new pod still starts, on the last daemon.
        const fresh = "fresh";
        expect((await env.run(IMAGES.demo, fresh, ["/wasi-demo-app.wasm", "echo", "x"], { runtime: SHARED_RUNTIME })).code).toBe(0);
        process.kill(last, "SIGTERM");
        await until(`daemon ${last} to stop`, () => !alive(last));
        console.log(`containerd ${c.name}: ${ids.length} containers over daemons ${daemons.join(", ")}: ${order.join("")}`);
      },
      T,
    );
  });
}
