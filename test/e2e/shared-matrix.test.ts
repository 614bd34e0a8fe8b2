// Shared mode under the other containerd versions (1.7 and 2.x built by
// scripts/containerd-versions.sh; the rest of test/e2e runs Debian's 1.6): the thin shim's
// `start` reply in each form (1.7 JSON version 2, 2.3+ a BootstrapResult for task v3), a
// daemon-run module's life through ctr (RUNNING, ps, metrics, SIGTERM → 143), stdin piped
// into a pooled module, a native
// container, and the events in order. Needs root, runc and those builds.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { feed } from "../support/containerd.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { IMAGES, REPO, type ShimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

function pinnedVersions(): string[] {
  const override = process.env.BUNWASI_CONTAINERD_VERSIONS?.trim();
  if (override) return override.split(/\s+/);
  const m = /^PINNED=\(([^)]*)\)/m.exec(readFileSync(join(REPO, "scripts/containerd-versions.sh"), "utf8"));
  return m?.[1]?.trim().split(/\s+/) ?? [];
}
const VERSIONS = pinnedVersions();
const binDir = (v: string) => join(REPO, "build/containerd", v, "bin");
const T = 60_000;

test("prerequisites: root, runc, the pinned containerd builds", () => {
  expect(process.getuid?.()).toBe(0);
  expect(!!Bun.which("runc")).toBe(true);
  expect(VERSIONS.length).toBeGreaterThan(0);
  for (const v of VERSIONS) expect(existsSync(join(binDir(v), "containerd"))).toBe(true);
});

for (const version of VERSIONS) {
  const [major = 0, minor = 0] = version.replace(/^v/, "").split(".").map(Number);
  const shimVersion = major > 2 || (major === 2 && minor >= 3) ? 3 : 2;

  describe(`shared mode under containerd ${version}`, () => {
    let shared: SharedEnv | undefined;
    let dir: string;
    let daemon: Daemon;
    let env: ShimEnv;

    beforeAll(async () => {
      shared = await sharedEnv({ prefix: "/tmp/bwm-", containerd: { binary: join(binDir(version), "containerd") } });
      ({ dir, daemon, env } = shared);
    }, 120_000);

    afterAll(() => shared?.stop(), T);

    const ctrOk = async (args: string[]) => {
      const r = await env.cd.ctr(args);
      if (r.code !== 0) throw new Error(`ctr ${args.join(" ")} → ${r.code}: ${r.stderr}`);
      return r.stdout;
    };
    const status = async (id: string) =>
      (await ctrOk(["tasks", "ls"]))
        .split("\n")
        .map((l) => l.trim().split(/\s+/))
        .find((f) => f[0] === id);

    test(
      "echo hello; exit 3 propagates",
      async () => {
        const r = await env.run(IMAGES.demo, `smx-echo-${major}`, ["/wasi-demo-app.wasm", "echo", "hello"], { runtime: SHARED_RUNTIME });
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("hello\nexiting\n");
        expect(r.code).toBe(0);
        const three = await env.run(IMAGES.demo, `smx-exit-${major}`, ["/wasi-demo-app.wasm", "exit", "3"], { runtime: SHARED_RUNTIME });
        expect(three.code).toBe(3);
      },
      T,
    );

    test(
      "stdin: 200 KB piped into ctr run reach a pooled module whole (the relay tells it piece by piece), and EOF ends it",
      async () => {
        const id = `smx-stdin-${major}`;
        const p = env.cd.ctrSpawn(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.tools, id, "/cat.wasm"], { stdin: "pipe" });
        await until(`${id} RUNNING`, async () => (await status(id))?.[2] === "RUNNING");
        const input = `first\n${"y".repeat(200_000)}\nlast`;
        const { stdout, stderr, code } = await feed(p, input);
        expect(stderr).toBe("");
        expect(stdout).toBe(input);
        expect(code).toBe(0);
      },
      T,
    );

    test(
      "a sleeping module: RUNNING with the daemon's pid, the start reply containerd recorded, ps and metrics answer, SIGTERM → 143",
      async () => {
        const id = `smx-sleep-${major}`;
        await ctrOk(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, "/wasi-demo-app.wasm", "sleep", "600"]);
        await until(`${id} RUNNING`, async () => (await status(id))?.[2] === "RUNNING");
        expect(Number((await status(id))?.[1])).toBe(daemon.pid);
        const bundle = join(env.cd.state, "io.containerd.runtime.v2.task", env.cd.namespace, id);
        const address = readFileSync(join(bundle, "address"), "utf8");
        expect(address).toStartWith(`unix://${join(dir, "d", "sandboxes")}/`);
        if (major >= 2) {
          expect(JSON.parse(readFileSync(join(bundle, "bootstrap.json"), "utf8"))).toMatchObject({
            version: shimVersion,
            address,
            protocol: "ttrpc",
          });
        }
        expect(await ctrOk(["task", "ps", id])).toContain(String(daemon.pid));
        expect(await ctrOk(["task", "metrics", id])).toContain(id);
        await ctrOk(["task", "kill", id]);
        await until(`${id} STOPPED`, async () => (await status(id))?.[2] === "STOPPED");
        const del = await env.cd.ctr(["task", "delete", id]);
        expect(del.code).toBe(0);
        expect(del.stderr).toContain("exit with non-zero exit code 143");
        await ctrOk(["container", "rm", id]);
      },
      T,
    );

    test(
      "ctr events: /tasks/create, /tasks/start, /tasks/exit, /tasks/delete in order, each once (wasm and native)",
      async () => {
        const ev = env.cd.ctrSpawn(["events"]);
        let text = "";
        const pump = (async () => {
          const dec = new TextDecoder();
          for await (const chunk of ev.stdout) text += dec.decode(chunk, { stream: true });
        })();
        try {
          // ctr events subscribes asynchronously: an event of our own says it is listening.
          let n = 0;
          await until("ctr events to listen", async () => {
            await ctrOk(["namespaces", "label", env.cd.namespace, `smx-sync=${n++}`]);
            await Bun.sleep(50);
            return text.includes("/namespaces/update");
          });
          const ids = [`smx-ev-wasm-${major}`, `smx-ev-native-${major}`];
          const w = await env.run(IMAGES.demo, ids[0] as string, ["/wasi-demo-app.wasm", "exit", "7"], { runtime: SHARED_RUNTIME });
          expect(w.code).toBe(7);
          const nat = await env.run(IMAGES.busybox, ids[1] as string, ["sh", "-c", "exit 5"], { runtime: SHARED_RUNTIME });
          expect(nat.code).toBe(5);
          const mine = (id: string) =>
            text
              .split("\n")
              .filter((l) => l.includes(`"${id}"`))
              .map((l) => ({ topic: l.split(" ").find((x) => x.startsWith("/")) ?? "", line: l }));
          for (const [id, code] of [
            [ids[0] as string, 7],
            [ids[1] as string, 5],
          ] as const) {
            await until(`${id}'s /containers/delete`, () => mine(id).some((e) => e.topic === "/containers/delete"));
            const tasks = mine(id).filter((e) => e.topic.startsWith("/tasks/"));
            expect(tasks.map((e) => e.topic)).toEqual(["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
            expect(tasks.find((e) => e.topic === "/tasks/exit")?.line).toContain(`"exit_status":${code}`);
          }
        } finally {
          ev.kill();
          await ev.exited;
          await pump.catch(() => {});
          await env.cd.ctr(["namespaces", "label", env.cd.namespace, "smx-sync="]);
        }
      },
      T,
    );

    test(
      "containerd restart while a module runs in the daemon: still RUNNING, killable afterwards",
      async () => {
        const id = `smx-restart-${major}`;
        await ctrOk(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, "/wasi-demo-app.wasm", "sleep", "600"]);
        await until(`${id} RUNNING`, async () => (await status(id))?.[2] === "RUNNING");
        await env.cd.restart();
        expect((await status(id))?.[2]).toBe("RUNNING");
        await ctrOk(["task", "kill", "-s", "SIGKILL", id]);
        await until(`${id} STOPPED`, async () => (await status(id))?.[2] === "STOPPED");
        const del = await env.cd.ctr(["task", "delete", id]);
        expect(del.stderr).toContain("exit with non-zero exit code 137");
        await ctrOk(["container", "rm", id]);
      },
      T,
    );

    test(
      "a native busybox container through the same runtime",
      async () => {
        const r = await env.run(IMAGES.busybox, `smx-native-${major}`, ["sh", "-c", "echo native; exit 4"], { runtime: SHARED_RUNTIME });
        expect(r.stdout).toBe("native\n");
        expect(r.code).toBe(4);
      },
      T,
    );
  });
}
