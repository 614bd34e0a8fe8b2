// A crash of the shared-mode daemon leaves nothing behind (issue 17 item 4; the project's rule:
// nothing leaks after a crash or a restart), under a real containerd, 1.6 and the pinned 2.x.
//
// 1. SIGKILL of the daemon under N running wasm containers and one native one (busybox under
//    runc): containerd sees every exit, each as 137 (killed: the thin shim's `delete`, which
//    containerd runs for each dead "shim", answered in time); after a restart of the daemon
//    nothing is left: no mount (rootfs, module view), work dir, runc state, process of the
//    native container, or sandbox socket of the dead daemon.
// 2. The same when containerd's `delete` never cleaned up (what a `delete` killed at containerd's
//    5 s cleanup timeout leaves, as at N = 1000 on two cores: docs/ARCHITECTURE.md, "What a crash
//    costs"): a thin shim whose `delete` fails leaves the work dirs, the mounts and the native
//    container's process in place; the restarted daemon sweeps them all.
//
// Needs root, containerd, runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { IMAGES, REPO, type ShimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

/** Running wasm containers when the daemon is killed. */
const N = Number(process.env.BUNWASI_CRASH_N ?? 50);
/** Where every `delete` fails: fewer suffice. */
const N_FAILED = 10;
const PARALLEL = 8;
const T = 600_000;
let seq = 0;
const uid = (what: string) => `scr-${what}-${process.pid}-${seq++}`;

async function eachLimited<X>(xs: X[], n: number, f: (x: X) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, xs.length) }, async () => {
      while (next < xs.length) await f(xs[next++] as X);
    }),
  );
}

const entries = (d: string) => (existsSync(d) ? readdirSync(d) : []);

/** One containerd, one daemon, the containers of one case. */
function crashScene(containerd: string, opts: { failingDelete: boolean }) {
  const s = {
    shared: undefined as SharedEnv | undefined,
    daemonDir: "",
    daemon: undefined as Daemon | undefined,
    env: undefined as ShimEnv | undefined,
    /** Mount points of this scene: containerd's bundles and the work dirs both name its namespace. */
    mounts(): string[] {
      const ns = s.env?.cd.namespace as string;
      return readFileSync("/proc/self/mountinfo", "utf8")
        .split("\n")
        .map((l) => l.split(" ")[4] ?? "")
        .filter((m) => m.includes(ns) || m.includes(s.daemonDir));
    },
    async setUp() {
      s.shared = await sharedEnv({
        prefix: "/tmp/bwk-",
        containerd: (dir) => {
          if (!opts.failingDelete) return { binary: containerd };
          // The thin shim, but its `delete` fails without doing anything: containerd records the
          // exit as 255 and leaves everything as it was (its rootfs mounts included).
          const bin = join(dir, "bin");
          mkdirSync(bin);
          const shim = join(bin, "containerd-shim-wasmtimed-v1");
          writeFileSync(
            shim,
            `#!/bin/sh\nfor a in "$@"; do [ "$a" = delete ] && { echo "delete: refused (test)" >&2; exit 1; }; done\nexec ${join(REPO, "build/bin/containerd-shim-wasmtimed-v1")} "$@"\n`,
          );
          chmodSync(shim, 0o755);
          return { binary: containerd, ourShims: false, path: [bin] };
        },
      });
      ({ daemonDir: s.daemonDir, daemon: s.daemon, env: s.env } = s.shared);
    },
    /** What a failed case left goes too: SharedEnv.stop unmounts before it removes. */
    async tearDown() {
      await s.shared?.stop();
    },
    /**
     * `n` wasm containers asleep and one native one (busybox sleep under runc) running in the
     * daemon; then SIGKILL of the daemon, and every exit seen by containerd. Resolves with the
     * exits and the native container's process.
     */
    async runAndCrash(n: number): Promise<{ ids: string[]; exits: Map<string, number>; nativePid: number }> {
      const env = s.env as ShimEnv;
      const events = env.cd.watchExits();
      try {
        const probe = uid("probe");
        expect(
          (await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, probe, "/wasi-demo-app.wasm", "echo", "x"])).code,
        ).toBe(0);
        await until("ctr events to report the probe's exit", () => events.exits.has(probe), 60_000);
        expect((await env.cd.ctr(["tasks", "delete", probe])).code).toBe(0);
        const wasm = Array.from({ length: n }, () => uid("wasm"));
        await eachLimited(wasm, PARALLEL, async (id) => {
          const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, "/wasi-demo-app.wasm", "sleep", "600000"]);
          if (r.code !== 0) throw new Error(`ctr run ${id}: ${r.stderr}`);
        });
        const native = uid("native");
        const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.busybox, native, "sleep", "600"]);
        expect(r.stderr).toBe("");
        const ids = [...wasm, native];
        await until(
          `all ${ids.length} to run`,
          async () => {
            const t = await env.cd.taskList();
            return ids.every((id) => t.get(id)?.[1] === "RUNNING");
          },
          T,
        );
        const nativePid = (await env.cd.taskList()).get(native)?.[0] as number;
        expect(existsSync(`/proc/${nativePid}`)).toBe(true);
        // The daemon's files for them: a work dir each, a sandbox socket each, the mounts.
        const ns = env.cd.namespace;
        expect(entries(containerStateDir(ns)).sort()).toEqual([...ids].sort());
        // (The probe's sandbox closes once containerd has shut it down.)
        await until("a sandbox socket each", () => entries(join(s.daemonDir, "sandboxes")).length === ids.length);
        expect(s.mounts().length).toBeGreaterThanOrEqual(ids.length);

        expect(await (s.daemon as Daemon).stop("SIGKILL")).toBe("SIGKILL");
        await until("containerd to see every exit", () => ids.every((id) => events.exits.has(id)), T);
        return { ids, exits: events.exits, nativePid };
      } finally {
        events.stop();
      }
    },
    /** After the restart: nothing of the dead daemon's is left. */
    async expectNothingLeft(nativePid: number) {
      const ns = (s.env as ShimEnv).cd.namespace;
      const daemon = s.daemon as Daemon;
      // The restarted daemon sweeps in the background once it serves: its log says when it is done.
      if (daemon.log().includes("cleaning up "))
        await until("the sweep to end", () => /cleaned up \d+ containers left by dead daemons/.test(daemon.log()), T);
      expect(s.mounts()).toEqual([]);
      expect(entries(containerStateDir(ns))).toEqual([]);
      expect(entries(runtimeRoot(ns))).toEqual([]);
      // runc delete --force killed it; its parent (the dead daemon, its subreaper) is gone: init reaps it.
      await until("the native container's process to be gone", () => !existsSync(`/proc/${nativePid}`));
      expect(entries(join(s.daemonDir, "sandboxes"))).toEqual([]);
      expect(entries(join(s.daemonDir, "daemons"))).toEqual([`${daemon.pid}.sock`]);
    },
  };
  return s;
}

for (const c of CONTAINERDS) {
  describe(`shared mode: SIGKILL of the daemon under ${N} running wasm containers and a native one, containerd ${c.name}`, () => {
    const s = crashScene(c.binary, { failingDelete: false });
    beforeAll(() => s.setUp(), 300_000);
    afterAll(() => s.tearDown(), T);

    test(
      "containerd sees every exit as 137; after a restart nothing is left (mounts, work dirs, runc state, the native process, sockets); the restarted daemon serves",
      async () => {
        const { ids, exits, nativePid } = await s.runAndCrash(N);
        for (const id of ids) expect([id, exits.get(id)]).toEqual([id, 137]);
        // containerd forgot every task.
        await until("no task left", async () => {
          const t = await (s.env as ShimEnv).cd.taskList();
          return ids.every((id) => !t.has(id));
        });
        const daemon = s.daemon as Daemon;
        await daemon.restart();
        await s.expectNothingLeft(nativePid);
        const env = s.env as ShimEnv;
        const r = await env.run(IMAGES.demo, uid("after"), ["/wasi-demo-app.wasm", "echo", "back"], { runtime: SHARED_RUNTIME });
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("back\nexiting\n");
        expect(entries(containerStateDir(env.cd.namespace))).toEqual([]);
      },
      T,
    );
  });

  describe(`shared mode: a restarted daemon sweeps what a crashed one left when containerd's delete did not clean up, containerd ${c.name}`, () => {
    const s = crashScene(c.binary, { failingDelete: true });
    beforeAll(() => s.setUp(), 300_000);
    afterAll(() => s.tearDown(), T);

    test(
      "work dirs, rootfs and view mounts, runc state and the native container's process are left by the failed deletes, then swept by the restart",
      async () => {
        const { ids, exits, nativePid } = await s.runAndCrash(N_FAILED);
        const ns = (s.env as ShimEnv).cd.namespace;
        // containerd's record of a `delete` that failed (as of one it killed at its timeout).
        for (const id of ids) expect([id, exits.get(id)]).toEqual([id, 255]);
        // Left behind, as at N = 1000 before this sweep existed.
        expect(entries(containerStateDir(ns)).sort()).toEqual([...ids].sort());
        expect(entries(runtimeRoot(ns))).toHaveLength(1);
        expect(s.mounts().length).toBeGreaterThanOrEqual(ids.length);
        expect(existsSync(`/proc/${nativePid}`)).toBe(true);

        const daemon = s.daemon as Daemon;
        await daemon.restart();
        await s.expectNothingLeft(nativePid);
        expect(daemon.log()).toContain(`cleaned up ${ids.length} containers left by dead daemons`);
      },
      T,
    );
  });
}
