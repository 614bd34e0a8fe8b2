// Shared mode when the daemon goes away: killed with SIGKILL while a wasm and a native
// container run (containerd reports both exited, the thin shim's `delete` cleans up runc
// and the mounts, the module's view included, without the daemon, and a restarted daemon
// runs new pods), and stopped
// with SIGTERM (its wasm containers end with 143, it exits 0). Needs root, containerd, runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { mountsUnder } from "../support/containerd.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { IMAGES, type ShimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 120_000;
let seq = 0;
const uid = (what: string) => `shf-${what}-${process.pid}-${seq++}`;

describe("shared mode: the daemon dies or stops", () => {
  let shared: SharedEnv | undefined;
  let daemon: Daemon;
  let env: ShimEnv;

  beforeAll(async () => {
    shared = await sharedEnv({ prefix: "/tmp/bwf-" });
    ({ daemon, env } = shared);
  }, 300_000);

  afterAll(() => shared?.stop(), T);

  const spawnRun = (image: string, id: string, args: readonly string[]) =>
    env.cd.ctrSpawn(["run", "--rm", "--runtime", SHARED_RUNTIME, image, id, ...args]);

  async function running(id: string): Promise<boolean> {
    return (await env.cd.ctr(["tasks", "ls"])).stdout.split("\n").some((l) => l.startsWith(`${id} `) && l.includes("RUNNING"));
  }

  /** Containers runc still knows in this containerd's namespace. */
  function runcContainers(): string[] {
    const root = runtimeRoot(env.cd.namespace);
    return existsSync(root) ? readdirSync(root) : [];
  }

  test(
    "SIGKILL of the daemon: both tasks are reported exited (137), runc and the mounts are cleaned up, a restarted daemon runs new pods",
    async () => {
      const wasm = uid("wasm");
      const native = uid("native");
      const events = env.cd.ctrSpawn(["events"]);
      let seen = "";
      const reader = (async () => {
        for await (const chunk of events.stdout) seen += new TextDecoder().decode(chunk);
      })();
      for (const [id, image, args] of [
        [wasm, IMAGES.demo, ["/wasi-demo-app.wasm", "sleep", "600000"]],
        [native, IMAGES.busybox, ["sleep", "600"]],
      ] as const) {
        const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, image, id, ...args]);
        expect(r.code).toBe(0);
      }
      await until("both to run", async () => (await running(wasm)) && (await running(native)));
      expect(runcContainers()).toContain(native);
      // The module's view, which the daemon mounted in the container's work dir.
      const workDir = join(containerStateDir(env.cd.namespace), wasm);
      expect(mountsUnder(workDir)).toEqual([join(workDir, "wasi-root")]);

      expect(await daemon.stop("SIGKILL")).toBe("SIGKILL");
      // containerd sees the sandboxes' sockets close, runs the thin shim's `delete` (which
      // cannot reach the daemon and cleans up itself) and publishes each task's exit with
      // the status it answered: killed.
      const exitOf = (id: string) => new RegExp(`/tasks/exit {[^\n]*"container_id":"${id}"[^\n]*"exit_status":137`);
      await until("both exits published", () => exitOf(wasm).test(seen) && exitOf(native).test(seen));
      events.kill();
      await reader;
      // The native container's processes are gone with it (runc delete --force), nothing is mounted.
      await until("runc to forget the native container", () => !runcContainers().includes(native));
      expect(mountsUnder(env.dir)).toEqual([]);
      // The view too (the thin shim's delete took it down before removing the work dir).
      expect(mountsUnder(containerStateDir(env.cd.namespace))).toEqual([]);
      expect(existsSync(workDir)).toBe(false);
      const tasks = (await env.cd.ctr(["tasks", "ls", "-q"])).stdout.split("\n");
      expect(tasks).not.toContain(wasm);
      expect(tasks).not.toContain(native);
      for (const id of [wasm, native]) expect((await env.cd.ctr(["containers", "rm", id])).code).toBe(0);

      // With no daemon, `ctr run` fails and says why.
      const refused = await env.cd.ctr(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.demo, uid("nodaemon"), "/wasi-demo-app.wasm"]);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain("start containerd-wasmtimed");

      await daemon.restart();
      const r = await env.cd.ctr([
        "run",
        "--rm",
        "--runtime",
        SHARED_RUNTIME,
        IMAGES.demo,
        uid("after"),
        "/wasi-demo-app.wasm",
        "echo",
        "back",
      ]);
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("back\nexiting\n");
      expect(r.code).toBe(0);
      const n = await env.cd.ctr(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.busybox, uid("after-native"), "echo", "native back"]);
      expect(n.stdout).toBe("native back\n");
      expect(n.code).toBe(0);
    },
    T,
  );

  test(
    "SIGTERM of the daemon: its wasm containers end with 143, it exits 0; restarted, it serves again",
    async () => {
      const id = uid("term");
      const p = spawnRun(IMAGES.demo, id, ["/wasi-demo-app.wasm", "sleep", "600000"]);
      await until("the task to run", () => running(id));
      expect(await daemon.stop("SIGTERM")).toBe(0);
      expect(await p.exited).toBe(143);
      expect(daemon.log()).toContain("stopping; no new sandboxes");
      await daemon.restart();
      const r = await env.cd.ctr([
        "run",
        "--rm",
        "--runtime",
        SHARED_RUNTIME,
        IMAGES.demo,
        uid("again"),
        "/wasi-demo-app.wasm",
        "echo",
        "again",
      ]);
      expect(r.stdout).toBe("again\nexiting\n");
      expect(r.code).toBe(0);
    },
    T,
  );
});
