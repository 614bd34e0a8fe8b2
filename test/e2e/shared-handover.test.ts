// An upgrade of the shared-mode daemon without losing a pod (issue 17 item 3), under a real
// containerd: N wasm containers run in daemon A; daemon B starts with --take-over on the same
// socket. None of the N exits; each still answers State, Kill (SIGTERM → 143) and Delete
// through containerd, served by A (their task pid stays A's); a new pod lands on B (its pid);
// a lookup of an old pod through B's manager answers A's sandbox, and a `shim delete` asked
// of B reaches A; A exits once its last sandbox is deleted and leaves nothing behind (sockets,
// state dirs, mounts). Without --take-over a second daemon still refuses (shared-lock.test.ts),
// and a take-over with no daemon running just starts. On containerd 1.6 and the pinned 2.x
// (test/support/containerd-versions.ts). Needs root, containerd, runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { daemonLockPath } from "../../src/daemon/lock.ts";
import { containerStateDir } from "../../src/runtime-v2/paths.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { IMAGES, type ShimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

/** Running wasm containers handed over (the figure). */
const N = Number(process.env.BUNWASI_HANDOVER_N ?? 100);
/** ctr calls at once while starting and deleting them. */
const PARALLEL = 8;
const T = 600_000;
let seq = 0;
const uid = (what: string) => `sho-${what}-${process.pid}-${seq++}`;

/** Runs f over xs, at most `n` at once. */
async function eachLimited<X>(xs: X[], n: number, f: (x: X) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, xs.length) }, async () => {
      while (next < xs.length) await f(xs[next++] as X);
    }),
  );
}

/** Mount points under `path` (the daemon's views, rootfs mounts). */
function mountsUnder(...paths: string[]): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => paths.some((p) => m.includes(p)));
}

for (const c of CONTAINERDS) {
  describe(`shared mode: hand-over to a new daemon under ${N} running wasm containers, containerd ${c.name}`, () => {
    let shared: SharedEnv | undefined;
    let dir: string;
    let daemonDir: string;
    let socket: string;
    let a: Daemon;
    let b: Daemon | undefined;
    let env: ShimEnv;

    beforeAll(async () => {
      shared = await sharedEnv({ prefix: "/tmp/bwh-", containerd: { binary: c.binary } });
      ({ dir, daemonDir, daemon: a, env } = shared);
      socket = a.socket;
    }, 300_000);

    // B (each one started) is stopped too, before A.
    afterAll(() => shared?.stop(), T);

    const tasks = () => env.cd.taskList();

    /** Starts daemon B with --take-over and waits until the manager socket is its. */
    async function takeOver(): Promise<Daemon> {
      const before = statSync(socket).ino;
      // It returns once the socket answers (startDaemon): the old daemon's does already.
      const d = await (shared as SharedEnv).anotherDaemon(["--take-over"]);
      await until("the new daemon to serve the manager socket", () => {
        if (d.proc.exitCode !== null) throw new Error(`the new daemon exited: ${d.log()}`);
        return statSync(socket).ino !== before && existsSync(join(daemonDir, "daemons", `${d.pid}.sock`));
      });
      return d;
    }

    test(
      `${N} running wasm containers survive a hand-over; each answers State, Kill (143) and Delete; new pods land on the new daemon; the old one exits with its last sandbox; nothing is left`,
      async () => {
        // containerd's exit events from here on: a probe's exit seen means ctr has subscribed.
        const events = env.cd.watchExits();
        const probe = uid("probe");
        expect(
          (await env.cd.ctr(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.demo, probe, "/wasi-demo-app.wasm", "echo", "x"])).code,
        ).toBe(0);
        await until("ctr events to report the probe's exit", () => events.exits.has(probe));
        const ids = Array.from({ length: N }, () => uid("old"));
        const t0 = performance.now();
        await eachLimited(ids, PARALLEL, async (id) => {
          const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, "/wasi-demo-app.wasm", "sleep", "600000"]);
          if (r.code !== 0) throw new Error(`ctr run ${id}: ${r.stderr}`);
        });
        await until(`all ${N} to run`, async () => {
          const t = await tasks();
          return ids.every((id) => t.get(id)?.[1] === "RUNNING");
        });
        const started = performance.now() - t0;
        // Every one is A's: its task pid is the daemon's that runs it.
        for (const id of ids) expect((await tasks()).get(id)).toEqual([a.pid, "RUNNING"]);
        const oldSockets = readdirSync(join(daemonDir, "sandboxes"));
        expect(oldSockets).toHaveLength(N);
        for (const s of oldSockets) expect(s.endsWith(`.${a.pid}.sock`)).toBe(true);

        const t1 = performance.now();
        b = await takeOver();
        const handedOver = performance.now() - t1;
        expect(b.pid).not.toBe(a.pid);
        // B holds the directory's lock now; A lives on, draining, reachable at its own socket.
        expect(readFileSync(daemonLockPath(socket), "utf8")).toBe(`${b.pid} ${socket}\n`);
        expect(a.proc.exitCode).toBeNull();
        expect(b.log()).toContain(`daemon ${a.pid} hands over (it keeps its ${N} sandboxes until they are deleted)`);
        // A's sandbox sockets are where containerd knows them: nothing removed or replaced.
        expect(readdirSync(join(daemonDir, "sandboxes")).sort()).toEqual([...oldSockets].sort());

        // None exited: all still RUNNING, still A's.
        const afterTake = await tasks();
        for (const id of ids) expect(afterTake.get(id)).toEqual([a.pid, "RUNNING"]);

        // A new pod lands on B.
        const fresh = uid("new");
        const r = await env.cd.ctr([
          "run",
          "-d",
          "--runtime",
          SHARED_RUNTIME,
          IMAGES.demo,
          fresh,
          "/wasi-demo-app.wasm",
          "sleep",
          "600000",
        ]);
        expect(r.stderr).toBe("");
        expect(r.code).toBe(0);
        await until("the new pod to run", async () => (await tasks()).get(fresh)?.[1] === "RUNNING");
        expect((await tasks()).get(fresh)).toEqual([b.pid, "RUNNING"]);
        expect(await b.sandboxesOf(env.cd.namespace, fresh)).toHaveLength(1);
        expect(await b.sandboxesOf(env.cd.namespace, ids[0] as string)).toHaveLength(0);

        // The thin shim's `start` for an old pod (another container of it) asks B: B answers
        // with A's sandbox, where the pod runs.
        const bundle = join(dir, "bundle");
        mkdirSync(bundle, { recursive: true });
        writeFileSync(join(bundle, "config.json"), "{}");
        const { client, manager } = await b.manager();
        try {
          const old = await manager.createSandbox({
            id: ids[0] as string,
            namespace: env.cd.namespace,
            bundle,
            containerdAddress: env.cd.address,
            ttrpcAddress: `${env.cd.address}.ttrpc`,
            containerId: uid("second"),
            sandboxBundle: false,
          });
          expect(old.address).toMatch(new RegExp(`/sandboxes/[0-9a-f]{24}\\.${a.pid}\\.sock$`));
          expect(oldSockets.map((s) => `unix://${join(daemonDir, "sandboxes", s)}`)).toContain(old.address);
        } finally {
          client.close();
        }

        // Each old container answers State, Kill and Delete through containerd, served by A.
        const t2 = performance.now();
        const last = ids[ids.length - 1] as string;
        await eachLimited(ids, PARALLEL, async (id) => {
          if (id === last) {
            // A `shim delete` (the thin shim's delete path) asked of B for a container B does not
            // have is asked of A too (./generations.ts); one containerd has already deleted is in
            // neither: not found, no error, and A is untouched.
            const { client: cl, manager: m } = await (b as Daemon).manager();
            try {
              const del = await m.deleteSandbox({ containerId: uid("unknown"), namespace: env.cd.namespace, bundle: "" });
              expect(del.found).toBe(false);
            } finally {
              cl.close();
            }
            expect(a.proc.exitCode).toBeNull();
          }
          const k = await env.cd.ctr(["tasks", "kill", "-s", "SIGTERM", id]);
          if (k.code !== 0) throw new Error(`kill ${id}: ${k.stderr}`);
          await until(`${id} to stop`, async () => (await tasks()).get(id)?.[1] === "STOPPED");
          const d = await env.cd.ctr(["tasks", "delete", id]);
          if (d.code !== 0) throw new Error(`tasks delete ${id}: ${d.stderr}`);
          const cr = await env.cd.ctr(["containers", "rm", id]);
          if (cr.code !== 0) throw new Error(`containers rm ${id}: ${cr.stderr}`);
        });
        const killedAll = performance.now() - t2;
        expect((await tasks()).has(last)).toBe(false);
        // containerd saw each exit, with SIGTERM's status; none of the N exited before its kill
        // (each was RUNNING, A's, until then).
        await until("containerd to report every exit", () => ids.every((id) => events.exits.has(id)));
        for (const id of ids) expect({ id, status: events.exits.get(id) }).toEqual({ id, status: 143 });

        // A exits once its last sandbox is gone.
        expect(await a.proc.exited).toBe(0);
        expect(a.log()).toContain("handed over and every sandbox deleted: exiting");
        expect(existsSync(join(daemonDir, "daemons", `${a.pid}.sock`))).toBe(false);
        const left = readdirSync(join(daemonDir, "sandboxes"));
        expect(left.filter((s) => s.endsWith(`.${a.pid}.sock`))).toEqual([]);

        // The new pod, through B.
        expect((await env.cd.ctr(["tasks", "kill", "-s", "SIGTERM", fresh])).code).toBe(0);
        await until(`${fresh} to stop`, async () => (await tasks()).get(fresh)?.[1] === "STOPPED");
        expect((await env.cd.ctr(["tasks", "delete", fresh])).code).toBe(0);
        await until("containerd to report the new pod's exit", () => events.exits.has(fresh));
        expect(events.exits.get(fresh)).toBe(143);
        events.stop();
        expect((await env.cd.ctr(["containers", "rm", fresh])).code).toBe(0);
        await until("B's sandbox to close", () => readdirSync(join(daemonDir, "sandboxes")).length === 0);

        // Nothing left: sockets (only B's own manager socket), state dirs, mounts.
        expect(readdirSync(join(daemonDir, "daemons"))).toEqual([`${b.pid}.sock`]);
        const state = containerStateDir(env.cd.namespace);
        const stateLeft = existsSync(state) ? readdirSync(state).filter((n) => n.startsWith("sho-")) : [];
        expect(stateLeft).toEqual([]);
        expect(mountsUnder(env.cd.namespace, daemonDir)).toEqual([]);
        process.stderr.write(
          `[handover ${c.name}] N=${N}: started in ${(started / 1000).toFixed(1)} s, handed over in ${handedOver.toFixed(0)} ms, killed and deleted in ${(killedAll / 1000).toFixed(1)} s\n`,
        );
      },
      T,
    );

    test(
      "a take-over with no daemon running just starts; B, stopped, leaves the directory to it",
      async () => {
        expect(await b?.stop("SIGTERM")).toBe(0);
        const logged = readFileSync(join(daemonDir, "daemon.log"), "utf8").length;
        const d = await (shared as SharedEnv).anotherDaemon(["--take-over"]);
        b = d;
        expect(readFileSync(daemonLockPath(socket), "utf8")).toBe(`${d.pid} ${socket}\n`);
        expect(d.log().slice(logged)).not.toContain("hands over");
        const r = await env.cd.ctr(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.demo, uid("c"), "/wasi-demo-app.wasm", "echo", "C"]);
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("C\nexiting\n");
        expect(r.code).toBe(0);
      },
      T,
    );
  });
}
