// The shim under the other containerd versions it supports: the 1.7 and 2.x that
// scripts/containerd-versions.sh builds from the Go module proxy (the rest of test/e2e runs
// Debian's 1.6). For each, a private containerd with that binary (and its own ctr), the demo
// images, and the core of the lifecycle: run/exit codes, a daemon's exec and SIGTERM, ps/metrics, the
// event order, a native container through the same runtime, a containerd restart under a
// running task. Missing binaries fail the run (build them with scripts/setup.sh), never skip.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import type { Containerd } from "../support/containerd.ts";
import { ctrTasks, fileText, sleep, waitFile } from "../support/ctr-tasks.ts";
import { IMAGES, REPO, RUNTIME, type ShimEnv, shimEnv } from "../support/shim-env.ts";

/**
 * The versions scripts/containerd-versions.sh pins (its PINNED=(…) line), one place for both.
 * BUNWASI_CONTAINERD_VERSIONS="v2.2.9 …" runs others (build them first with that script).
 */
function pinnedVersions(): string[] {
  const override = process.env.BUNWASI_CONTAINERD_VERSIONS?.trim();
  if (override) return override.split(/\s+/);
  const script = readFileSync(join(REPO, "scripts/containerd-versions.sh"), "utf8");
  const m = /^PINNED=\(([^)]*)\)/m.exec(script);
  return m?.[1]?.trim().split(/\s+/) ?? [];
}

const VERSIONS = pinnedVersions();
const binDir = (v: string) => join(REPO, "build/containerd", v, "bin");
const T = 60_000;
const VERSE = "This is a song that never ends.";

test("prerequisites: root, runc, a 1.7 and a 2.x containerd built by scripts/containerd-versions.sh", () => {
  expect(process.getuid?.()).toBe(0);
  expect(Bun.which("runc")).not.toBeNull();
  if (!process.env.BUNWASI_CONTAINERD_VERSIONS?.trim()) {
    expect(VERSIONS.some((v) => v.startsWith("v1.7."))).toBe(true);
    expect(VERSIONS.some((v) => v.startsWith("v2."))).toBe(true);
  }
  for (const v of VERSIONS) {
    for (const b of ["containerd", "ctr"]) expect(`${binDir(v)}/${b}: ${existsSync(join(binDir(v), b))}`).toBe(`${binDir(v)}/${b}: true`);
  }
});

/** Accumulates a stream's text in the background. */
class Collector {
  text = "";
  constructor(stream: ReadableStream<Uint8Array>) {
    void this.pump(stream);
  }
  private async pump(stream: ReadableStream<Uint8Array>) {
    const dec = new TextDecoder();
    try {
      for await (const chunk of stream) this.text += dec.decode(chunk, { stream: true });
    } catch {}
  }
  async waitFor(pred: (text: string) => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (pred(this.text)) return true;
      await sleep(10);
    }
    return pred(this.text);
  }
}

for (const version of VERSIONS) {
  const [major = 0, minor = 0] = version.replace(/^v/, "").split(".").map(Number);
  /** What `start` tells this containerd (see startReply in src/runtime-v2/reply.ts): 3 only to 2.3+. */
  const shimVersion = major > 2 || (major === 2 && minor >= 3) ? 3 : 2;

  describe(`containerd ${version} (built from the module proxy) + compiled shim`, () => {
    let env: ShimEnv;
    let cd: Containerd;

    beforeAll(async () => {
      const binary = join(binDir(version), "containerd");
      if (!existsSync(binary)) throw new Error(`${binary} is missing: run scripts/containerd-versions.sh`);
      env = await shimEnv({ binary });
      cd = env.cd;
    }, 120_000);

    afterAll(async () => {
      if (!env) return;
      const ns = cd.namespace;
      await env.stop();
      for (const d of [runtimeRoot(ns), containerStateDir(ns)]) rmSync(d, { recursive: true, force: true });
    }, T);

    const { ctrOk, tasks, waitStatus, deleteTask, runDetached } = ctrTasks(
      () => cd,
      () => env.dir,
    );

    const bundleOf = (id: string) => join(cd.state, "io.containerd.runtime.v2.task", cd.namespace, id);

    test(
      "echo hello; exit 3 propagates",
      async () => {
        const r = await env.run(IMAGES.demo, "mx-echo", ["/wasi-demo-app.wasm", "echo", "hello"]);
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("hello\nexiting\n");
        expect(r.code).toBe(0);
        const three = await env.run(IMAGES.demo, "mx-exit3", ["/wasi-demo-app.wasm", "exit", "3"]);
        expect(three.code).toBe(3);
      },
      T,
    );

    test(
      "what containerd puts in the shim's environment (1.7+: GRPC_ADDRESS, NAMESPACE, MAX_SHIM_VERSION) stays out of the module",
      async () => {
        const r = await env.run(IMAGES.tools, "mx-env", ["/env.wasm"], { extra: ["--env", "K=V"] });
        expect(r.stderr).toBe("");
        expect(r.code).toBe(0);
        const envs = r.stdout
          .split("\n")
          .filter((l) => l.startsWith("env:"))
          .map((l) => l.slice(4));
        expect(envs).toContain("K=V");
        expect(envs.filter((e) => /^(BUNWASI_|TTRPC_ADDRESS|GRPC_ADDRESS|NAMESPACE|MAX_SHIM_VERSION|GOMAXPROCS)=/.test(e))).toEqual([]);
      },
      T,
    );

    test(
      "a daemon: RUNNING, the start reply containerd recorded, ps and metrics answer, exec of a module, SIGTERM → STOPPED and 143",
      async () => {
        const id = "mx-daemon";
        const log = await runDetached(id);
        await waitStatus(id, "RUNNING");
        expect(await waitFile(log, (t) => t.includes(VERSE))).toBe(true);

        // How containerd took `start`'s reply: 2.x records it in bootstrap.json (version 3 =
        // task v3, from the protobuf BootstrapResult 2.3+ gets; 2.0–2.2 get the JSON version 2);
        // 1.7 reconnects through the address file we write.
        const bundle = bundleOf(id);
        const address = readFileSync(join(bundle, "address"), "utf8");
        expect(address).toMatch(/^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
        if (major >= 2) {
          expect(JSON.parse(readFileSync(join(bundle, "bootstrap.json"), "utf8"))).toMatchObject({
            version: shimVersion,
            address,
            protocol: "ttrpc",
          });
        }

        const pid = (await tasks()).get(id)?.pid as number;
        expect(pid).toBeGreaterThan(0);
        expect(await ctrOk(["task", "ps", id])).toContain(String(pid));
        const metrics = await ctrOk(["task", "metrics", id]);
        expect(metrics).toContain(id);
        const json = JSON.parse(await ctrOk(["task", "metrics", "--format", "json", id]));
        expect(json.memory?.usage?.usage ?? json.memory?.usage).toBeGreaterThan(0);

        // Exec of a module into the running daemon: its output and exit code come back.
        const hi = await cd.ctr(["task", "exec", "--exec-id", "mx-e1", id, "/wasi-demo-app.wasm", "echo", "hi"]);
        expect(hi).toMatchObject({ code: 0, stdout: "hi\nexiting\n" });
        const three = await cd.ctr(["task", "exec", "--exec-id", "mx-e3", id, "/wasi-demo-app.wasm", "exit", "3"]);
        expect(three.code).toBe(3);

        await ctrOk(["task", "kill", id]);
        await waitStatus(id, "STOPPED");
        expect(await deleteTask(id)).toBe(143);
        await ctrOk(["container", "rm", id]);
      },
      T,
    );

    test(
      "ctr events: /tasks/create, /tasks/start, /tasks/exit, /tasks/delete in order, each once",
      async () => {
        const ev = cd.ctrSpawn(["events"]);
        const out = new Collector(ev.stdout);
        try {
          let synced = false;
          for (let i = 0; i < 100 && !synced; i++) {
            await ctrOk(["namespaces", "label", cd.namespace, `mx-sync=${i}`]);
            synced = await out.waitFor((t) => t.includes("/namespaces/update"), 100);
          }
          expect(synced).toBe(true);
          const id = "mx-events";
          const r = await env.run(IMAGES.demo, id, ["/wasi-demo-app.wasm", "exit", "7"]);
          expect(r.code).toBe(7);
          const mine = () =>
            out.text
              .split("\n")
              .filter((l) => l.includes(`"${id}"`))
              .map((l) => ({ topic: l.split(" ").find((w) => w.startsWith("/")) ?? "", line: l }));
          expect(await out.waitFor(() => mine().some((e) => e.topic === "/containers/delete"), 30_000)).toBe(true);
          const events = mine().filter((e) => e.topic.startsWith("/tasks/"));
          expect(events.map((e) => e.topic)).toEqual(["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
          expect(events.find((e) => e.topic === "/tasks/exit")?.line).toContain('"exit_status":7');
        } finally {
          ev.kill();
          await ev.exited;
          await cd.ctr(["namespaces", "label", cd.namespace, "mx-sync="]);
        }
      },
      T,
    );

    test(
      "a native busybox container through the same runtime",
      async () => {
        const r = await env.run(IMAGES.busybox, "mx-native", ["sh", "-c", "echo native; echo to-stderr >&2; exit 4"]);
        expect(r.stdout).toBe("native\n");
        expect(r.stderr).toBe("to-stderr\n");
        expect(r.code).toBe(4);
      },
      T,
    );

    test(
      "containerd restart while a daemon runs: still RUNNING (same pid), answers, killable afterwards",
      async () => {
        const id = "mx-restart";
        const log = await runDetached(id);
        await waitStatus(id, "RUNNING");
        const before = (await tasks()).get(id)?.pid;
        await cd.restart();
        const after = (await tasks()).get(id);
        expect(after?.status).toBe("RUNNING");
        expect(after?.pid).toBe(before as number);
        const size = fileText(log).length;
        expect(await waitFile(log, (t) => t.length > size, 5_000)).toBe(true);
        expect(await ctrOk(["task", "ps", id])).toContain(String(before));
        await ctrOk(["task", "kill", id]);
        await waitStatus(id, "STOPPED");
        expect(await deleteTask(id)).toBe(143);
        await ctrOk(["container", "rm", id]);
      },
      T,
    );

    if (major >= 2) {
      test(
        "`shim -info` through containerd (ctr plugins inspect-runtime): our name and version",
        async () => {
          const info = JSON.parse(await ctrOk(["plugins", "inspect-runtime", "--runtime", RUNTIME]));
          expect(info.Name).toBe(RUNTIME);
          expect(info.Version?.Version).toMatch(/^bunwasi /);
        },
        T,
      );
    }
  });
}
