// One shared-mode daemon per socket directory (src/daemon/lock.ts), under a real containerd:
// a second containerd-wasmtimed started on the first one's socket, or on another socket of
// its directory, exits non-zero naming the socket and the first daemon's pid, and touches
// nothing: the first one's socket and running sandboxes stay, and it goes on serving. The lock
// is held by the daemon alone (never by runc or a container), and a SIGKILLed daemon leaves it
// free, so a restarted one starts. On containerd 1.6 and the pinned 2.x
// (test/support/containerd-versions.ts). Needs root, containerd, runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { join } from "node:path";
import { daemonLockPath } from "../../src/daemon/lock.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { DAEMON, type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { IMAGES, type ShimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 120_000;
let seq = 0;
const uid = (what: string) => `shl-${what}-${process.pid}-${seq++}`;

/** Every process that has `path` open, by pid (a scan of /proc/<pid>/fd). */
function holdersOf(path: string): number[] {
  const out = new Set<number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${name}/fd`);
    } catch {
      continue; // gone meanwhile
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${name}/fd/${fd}`) === path) out.add(Number(name));
      } catch {}
    }
  }
  return [...out].sort((a, b) => a - b);
}

/** What a directory holds (names and inodes): equal snapshots mean nothing was replaced. */
function snapshot(dir: string): string[] {
  return readdirSync(dir)
    .map((n) => `${n}@${statSync(join(dir, n)).ino}`)
    .sort();
}

for (const c of CONTAINERDS) {
  describe(`shared mode: one daemon per socket directory, containerd ${c.name}`, () => {
    let shared: SharedEnv | undefined;
    let dir: string;
    let daemonDir: string;
    let daemon: Daemon;
    let env: ShimEnv;

    beforeAll(async () => {
      shared = await sharedEnv({ prefix: "/tmp/bwl-", containerd: { binary: c.binary } });
      ({ dir, daemonDir, daemon, env } = shared);
    }, 300_000);

    afterAll(() => shared?.stop(), T);

    async function running(id: string): Promise<boolean> {
      return (await env.cd.ctr(["tasks", "ls"])).stdout.split("\n").some((l) => l.startsWith(`${id} `) && l.includes("RUNNING"));
    }

    /**
     * Runs a second daemon on `socket` to its end: its exit code and what it said. If instead it
     * binds the socket (what a daemon did before the lock), it is stopped and that is the answer.
     */
    async function secondDaemon(socket: string): Promise<{ code: number | null; stderr: string; stdout: string }> {
      const inode = () => (existsSync(socket) ? statSync(socket).ino : 0);
      const first = inode();
      const p = Bun.spawn([DAEMON, "--socket", socket, "--debug"], {
        env: { ...(process.env as Record<string, string>), BUNWASI_EXEC_ROOT: join(dir, "exec2") },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      });
      try {
        const output = Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
        let ended = false;
        void p.exited.then(() => {
          ended = true;
        });
        while (!ended && inode() === first) await Bun.sleep(25);
        if (!ended) throw new Error(`the second daemon bound ${socket} instead of refusing`);
        const [stdout, stderr] = await output;
        return { code: p.exitCode, stdout, stderr };
      } finally {
        if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
        await p.exited;
      }
    }

    test(
      "a second daemon on the same socket, or on another socket of its directory, exits 1 naming it and the first's pid; the first's socket and sandboxes are untouched and it serves on",
      async () => {
        const wasm = uid("wasm");
        const native = uid("native");
        for (const [id, image, args] of [
          [wasm, IMAGES.demo, ["/wasi-demo-app.wasm", "sleep", "600000"]],
          [native, IMAGES.busybox, ["sleep", "600"]],
        ] as const) {
          const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, image, id, ...args]);
          expect(r.code).toBe(0);
        }
        await until("both to run", async () => (await running(wasm)) && (await running(native)));
        const sandboxes = join(daemonDir, "sandboxes");
        const before = { dir: snapshot(daemonDir), sandboxes: snapshot(sandboxes) };
        // Two sandboxes (one per pod), each a socket of its own.
        expect(before.sandboxes.filter((e) => e.includes(".sock@"))).toHaveLength(2);

        const lock = daemonLockPath(daemon.socket);
        const same = await secondDaemon(daemon.socket);
        expect(same.code).toBe(1);
        expect(same.stdout).toBe("");
        expect(same.stderr).toBe(
          `containerd-wasmtimed: another daemon (pid ${daemon.pid}) already serves ${daemon.socket} (it holds the lock ${lock}); nothing was changed: stop that daemon first, or use another directory\n`,
        );
        const other = join(daemonDir, "other.sock");
        const beside = await secondDaemon(other);
        expect(beside.code).toBe(1);
        expect(beside.stderr).toBe(
          `containerd-wasmtimed: another daemon (pid ${daemon.pid}) serving ${daemon.socket} owns ${daemonDir} and its sandboxes; one daemon per directory (it holds the lock ${lock}); nothing was changed: stop that daemon first, or use another directory\n`,
        );
        // Nothing replaced, nothing added, nothing removed; the first daemon lives.
        expect(snapshot(daemonDir)).toEqual(before.dir);
        expect(snapshot(sandboxes)).toEqual(before.sandboxes);
        expect(existsSync(other)).toBe(false);
        expect(daemon.proc.exitCode).toBeNull();
        expect(readFileSync(lock, "utf8")).toBe(`${daemon.pid} ${daemon.socket}\n`);

        // Only the daemon holds the lock open: not runc, not the native container, not the
        // thin shims, not the refused daemons. (Its fd is close-on-exec.)
        expect(holdersOf(lock)).toEqual([daemon.pid]);

        // The running containers were not disturbed, and the daemon serves new ones.
        expect(await running(wasm)).toBe(true);
        expect(await running(native)).toBe(true);
        const r = await env.cd.ctr([
          "run",
          "--rm",
          "--runtime",
          SHARED_RUNTIME,
          IMAGES.demo,
          uid("after"),
          "/wasi-demo-app.wasm",
          "echo",
          "still here",
        ]);
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("still here\nexiting\n");
        expect(r.code).toBe(0);
        for (const id of [wasm, native]) {
          expect((await env.cd.ctr(["tasks", "kill", "-s", "SIGKILL", id])).code).toBe(0);
          await until(`${id} to stop`, async () => !(await running(id)));
          expect((await env.cd.ctr(["tasks", "rm", id])).code).toBe(0);
          expect((await env.cd.ctr(["containers", "rm", id])).code).toBe(0);
        }
      },
      T,
    );

    test(
      "SIGKILL of the daemon frees the lock: a new daemon starts on the same socket, takes the lock and serves",
      async () => {
        const old = daemon.pid;
        expect(await daemon.stop("SIGKILL")).toBe("SIGKILL");
        // startDaemon's restart waits until the new daemon answers on the socket (it throws if
        // the daemon exits instead).
        await daemon.restart();
        expect(daemon.pid).not.toBe(old);
        const lock = daemonLockPath(daemon.socket);
        expect(readFileSync(lock, "utf8")).toBe(`${daemon.pid} ${daemon.socket}\n`);
        expect(holdersOf(lock)).toEqual([daemon.pid]);
        const r = await env.cd.ctr([
          "run",
          "--rm",
          "--runtime",
          SHARED_RUNTIME,
          IMAGES.demo,
          uid("restarted"),
          "/wasi-demo-app.wasm",
          "echo",
          "back",
        ]);
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("back\nexiting\n");
        expect(r.code).toBe(0);
        // And the restarted one refuses a newcomer in turn.
        const again = await secondDaemon(daemon.socket);
        expect(again.code).toBe(1);
        expect(again.stderr).toContain(`another daemon (pid ${daemon.pid}) already serves ${daemon.socket}`);
      },
      T,
    );
  });
}
