// Exec into a wasm container in shared mode (io.containerd.wasmtimed.v1, the daemon this file
// starts), through real `ctr task exec`, on Debian's containerd 1.6 and on 2.4.2 (built by
// scripts/containerd-versions.sh): the container's module with args and its exit code, a
// `#export`, a WAT of the rootfs, stdin through the exec, Kill of an exec (143, 137), the
// container killed under a running exec (the exec first, then the init), an exec after the
// init exited (refused as runc-v2 refuses it), a native binary of the rootfs refused saying
// why, and nothing left of 20 execs: the daemon's threads and fds back to their baseline
// (/proc/<daemon>/task, /proc/<daemon>/fd), no exec file left in the work dir. Needs root,
// containerd and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { GAVE_BACK } from "../../src/daemon/give-back.ts";
import { containerStateDir } from "../../src/runtime-v2/paths.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { ctrTasks, waitFile } from "../support/ctr-tasks.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { REPO, type ShimEnv, WASM } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 120_000;
const IMAGE = "docker.io/library/bunwasi-shared-exec:latest";
const VERSE = "This is a song that never ends.";
/** How long the daemon's counts may take to come back (liveness only: idle runtime threads end after 10 s). */
const SETTLE_MS = 60_000;
const ROUNDS = 20;

const V2 = join(REPO, "build/containerd/v2.4.2/bin/containerd");
const VERSIONS = [{ name: "containerd 1.6", binary: undefined }, ...(existsSync(V2) ? [{ name: "containerd 2.4.2", binary: V2 }] : [])];
test("containerd 2.4.2 is built (scripts/containerd-versions.sh)", () => expect(existsSync(V2)).toBe(true));

for (const version of VERSIONS) {
  describe(`exec into a wasm container, shared mode, ${version.name}`, () => {
    let shared: SharedEnv | undefined;
    let dir: string;
    let daemon: Daemon;
    let env: ShimEnv;
    let seq = 0;
    const uid = (what: string) => `sx-${what}-${process.pid}-${seq++}`;

    beforeAll(async () => {
      shared = await sharedEnv({ prefix: "/tmp/bwx-", containerd: version.binary ? { binary: version.binary } : {} });
      ({ dir, daemon, env } = shared);
      const archive = join(dir, "shared-exec.tar");
      writeImageArchive(archive, {
        name: IMAGE,
        files: [
          ...["wasi-demo-app", "cat", "funcs"].map((m) => ({ path: `/${m}.wasm`, source: join(WASM, `${m}.wasm`) })),
          { path: "/hello.wat", source: join(REPO, "test/wasm/hello-text.wat"), mode: 0o644 },
          // A native program in a wasm container's rootfs: normal mode runs it with runc exec.
          { path: "/bin/true", source: "/bin/true", mode: 0o755 },
        ],
        config: { entrypoint: ["/wasi-demo-app.wasm"], env: ["PATH=/bin:/"] },
      });
      const r = await env.cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import ${archive}: ${r.stderr}`);
    }, 300_000);

    afterAll(() => shared?.stop(), T);

    const t = ctrTasks(
      () => env.cd,
      () => dir,
    );

    /** `ctr task exec` without a terminal: its exit code and output. */
    const exec = (id: string, execId: string, args: string[], stdin?: string) =>
      env.cd.ctr(["task", "exec", "--exec-id", execId, id, ...args], { timeoutMs: 60_000, ...(stdin !== undefined ? { stdin } : {}) });

    /** A wasm container of the daemon, running the demo's endless song. */
    async function running(id: string): Promise<void> {
      const log = await t.runDetached(id, [], IMAGE, SHARED_RUNTIME);
      expect(await waitFile(log, (x) => x.includes(VERSE), 30_000)).toBe(true);
    }

    async function gone(id: string): Promise<void> {
      await t.ctrOk(["task", "kill", "-s", "SIGKILL", id]);
      await t.waitStatus(id, "STOPPED");
      expect(await t.deleteTask(id)).toBe(137);
      await t.ctrOk(["container", "rm", id]);
    }

    /** Until `ctr task ps` shows the exec among the container's processes. */
    const execShown = (id: string, execId: string) =>
      until(`exec ${execId} in ctr task ps ${id}`, async () => (await env.cd.ctr(["task", "ps", id])).stdout.includes(execId));

    const workDir = (id: string) => join(containerStateDir(env.cd.namespace), id);

    /** The daemon's thread ids now. */
    const threadIds = () => readdirSync(`/proc/${daemon.pid}/task`);

    /** The daemon's threads and open fds now. */
    const counts = () => ({ threads: threadIds().length, fds: daemon.fdCount() });

    /** Polls until `ok(counts())` (liveness only); returns the last counts. */
    async function settle(ok: (c: { threads: number; fds: number }) => boolean): Promise<{ threads: number; fds: number }> {
      const deadline = Date.now() + SETTLE_MS;
      let c = counts();
      while (!ok(c) && Date.now() < deadline) {
        await Bun.sleep(100);
        c = counts();
      }
      return c;
    }

    test(
      "the container's module with args, its exit code; #export; a WAT of the rootfs; stdin; the container runs on",
      async () => {
        const id = uid("mod");
        await running(id);
        expect(await exec(id, "e-echo", ["/wasi-demo-app.wasm", "echo", "hi from exec"])).toMatchObject({
          code: 0,
          stdout: "hi from exec\nexiting\n",
        });
        expect((await exec(id, "e-exit", ["/wasi-demo-app.wasm", "exit", "3"])).code).toBe(3);
        // funcs.wat: _start exits 1, `other` exits 7.
        expect((await exec(id, "e-func", ["/funcs.wasm#other"])).code).toBe(7);
        expect((await exec(id, "e-start", ["funcs.wasm"])).code).toBe(1);
        expect(await exec(id, "e-wat", ["/hello.wat"])).toMatchObject({ code: 0, stdout: "hello from wat\n" });
        expect(await exec(id, "e-cat", ["/cat.wasm"], "line one\nline two\n")).toMatchObject({
          code: 0,
          stdout: "line one\nline two\n",
        });
        expect((await t.tasks()).get(id)?.status).toBe("RUNNING");
        await gone(id);
      },
      T,
    );

    test(
      "Kill of an exec: SIGTERM 143, SIGKILL 137; the container runs on",
      async () => {
        const id = uid("kill");
        await running(id);
        for (const [signal, status] of [
          ["SIGTERM", 143],
          ["SIGKILL", 137],
        ] as const) {
          const execId = `e-sleep-${status}`;
          const sleeper = env.cd.ctrSpawn(["task", "exec", "--exec-id", execId, id, "/wasi-demo-app.wasm", "sleep", "60"]);
          await execShown(id, execId);
          await t.ctrOk(["task", "kill", "--exec-id", execId, "-s", signal, id]);
          expect(await sleeper.exited).toBe(status);
          expect((await t.tasks()).get(id)?.status).toBe("RUNNING");
        }
        await gone(id);
      },
      T,
    );

    test(
      "the container killed under a running exec: the exec ends (137), then the init; an exec after that is refused",
      async () => {
        const id = uid("init");
        await running(id);
        const sleeper = env.cd.ctrSpawn(["task", "exec", "--exec-id", "e-long", id, "/wasi-demo-app.wasm", "sleep", "600"]);
        await execShown(id, "e-long");
        await t.ctrOk(["task", "kill", "-s", "SIGKILL", id]);
        expect(await sleeper.exited).toBe(137);
        await t.waitStatus(id, "STOPPED");
        // As runc-v2: nothing runs in a container whose init has exited.
        const late = await exec(id, "e-late", ["/wasi-demo-app.wasm", "echo", "late"]);
        expect(late.code).not.toBe(0);
        expect(late.stderr).toContain("cannot exec in a stopped container");
        expect(await t.deleteTask(id)).toBe(137);
        await t.ctrOk(["container", "rm", id]);
      },
      T,
    );

    test(
      "a native binary of the rootfs is refused, saying why (normal mode runs it under runc exec)",
      async () => {
        const id = uid("native");
        await running(id);
        const r = await exec(id, "e-native", ["/bin/true"]);
        expect(r.code).not.toBe(0);
        expect(r.stderr).toContain(
          "/bin/true is a native program, and in shared mode a wasm container runs on a thread of the daemon: it has no Linux container to run a process in",
        );
        expect((await t.tasks()).get(id)?.status).toBe("RUNNING");
        await gone(id);
      },
      T,
    );

    test(
      `nothing left of ${ROUNDS} execs: the daemon's threads and fds back to their baseline, no exec file in the work dir; and after the container's Delete`,
      async () => {
        const id = uid("leak");
        // A container and an exec first, both gone: the threads the daemon's runtime makes for
        // its first runs are its own for every later one.
        const warm = uid("warm");
        await running(warm);
        expect((await exec(warm, "e-warm", ["/wasi-demo-app.wasm", "echo", "warm"])).code).toBe(0);
        const logFrom = daemon.log().length;
        await gone(warm);
        // Every run thread of the warm-up gone (the daemon says so in its give-back line): an idle
        // pool thread left over would take the exec below, which would then add no thread.
        expect(
          await until(
            "the warm-up's run threads to end",
            () =>
              daemon
                .log()
                .slice(logFrom)
                .split("\n")
                .some((l) => l.includes(GAVE_BACK) && l.includes(" 0 run threads")),
            SETTLE_MS,
          ),
        ).toBe(true);
        // Idle before the container: what every later count comes back to after its Delete.
        const idle = await settle((x) => {
          const again = counts();
          return again.threads === x.threads && again.fds === x.fds;
        });
        await running(id);
        const settled = await settle((x) => {
          const again = counts();
          return again.threads === x.threads && again.fds === x.fds;
        });
        const baseline = { ...settled, tids: new Set(threadIds()) };
        // The counts see an exec's run: its thread is there while it runs.
        const sleeper = env.cd.ctrSpawn(["task", "exec", "--exec-id", "e-seen", id, "/wasi-demo-app.wasm", "sleep", "60"]);
        await execShown(id, "e-seen");
        // A thread the baseline did not have, looked for until it shows (the exec may be listed a
        // moment before its thread starts). Ids, not a count: an idle runtime thread of the baseline
        // may end meanwhile, and a count would then never rise above it.
        expect(await until("the exec's thread", () => threadIds().some((t) => !baseline.tids.has(t)), SETTLE_MS)).toBe(true);
        await t.ctrOk(["task", "kill", "--exec-id", "e-seen", "-s", "SIGKILL", id]);
        expect(await sleeper.exited).toBe(137);
        for (let i = 0; i < ROUNDS; i++) {
          const r = await exec(id, `e-${i}`, ["/wasi-demo-app.wasm", "echo", `round ${i}`], `input ${i}\n`);
          expect(r).toMatchObject({ code: 0, stdout: `round ${i}\nexiting\n` });
        }
        const after = await settle((c) => c.threads <= baseline.threads && c.fds <= baseline.fds);
        expect(after.threads).toBeLessThanOrEqual(baseline.threads);
        expect(after.fds).toBeLessThanOrEqual(baseline.fds);
        expect(readdirSync(workDir(id)).filter((f) => f.startsWith("exec-"))).toEqual([]);
        await gone(id);
        const deleted = await settle((c) => c.threads <= idle.threads && c.fds <= idle.fds);
        expect(deleted.threads).toBeLessThanOrEqual(idle.threads);
        expect(deleted.fds).toBeLessThanOrEqual(idle.fds);
      },
      T,
    );
  });
}
