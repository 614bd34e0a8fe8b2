// wasi:http services under the real containerd (1.6) and the compiled shim: `ctr run` of
// test/wasm/http/handler.c as a component kept in a Linux-rootfs image. The container runs
// in the host's network namespace (`--net-host`) on a free loopback port given through
// runwasi's WASMTIME_HTTP_PROXY_SOCKET_ADDR, so the test reaches it directly; one test runs it
// in a network namespace of its own on the default 0.0.0.0:8080 and reaches it with
// nsenter. Needs root, containerd, runc, nsenter.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { ctrTasks, fileText, waitFile } from "../support/ctr-tasks.ts";
import { REPO, RUNTIME, type ShimEnv, shimEnv, WASM } from "../support/shim-env.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc") && !!Bun.which("nsenter");
// Stated as a test so that a machine without them fails loudly instead of skipping.
test("prerequisites: root, containerd, runc, nsenter", () => expect(canRun).toBe(true));

const T = 90_000;
const IMAGE = "docker.io/library/bunwasi-test-http:latest";

let seq = 0;
const uid = (what: string) => `http-${what}-${process.pid}-${seq++}`;

function sh(script: string): void {
  const r = Bun.spawnSync(["bash", join(REPO, "scripts", script)], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${script} failed: ${r.stderr.toString()}`);
}

/** A loopback port nobody listens on right now. */
function freePort(): number {
  const s = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("") });
  const port = s.port as number;
  s.stop(true);
  return port;
}

describe("wasi:http services through containerd-shim-wasmtime-v1", () => {
  let env: ShimEnv;
  let logs: string;
  const { ctrOk, waitStatus, deleteTask } = ctrTasks(
    () => env.cd,
    () => logs,
  );

  beforeAll(async () => {
    sh("build-components.sh");
    sh("http-host.sh");
    sh("build-http-components.sh");
    env = await shimEnv();
    logs = mkdtempSync("/tmp/bwh-logs-");
    const archive = join(env.dir, "http.tar");
    writeImageArchive(archive, {
      name: IMAGE,
      files: [
        { path: "/handler.wasm", source: join(WASM, "http", "handler.wasm") },
        { path: "/missing.wasm", source: join(WASM, "http", "missing.wasm") },
        // handler.wasm as component text (scripts/build-http-components.sh: `wasm-tools print`).
        { path: "/handler.wat", source: join(WASM, "http", "handler.wat") },
        // Names the service's export, but wasmtime's parser refuses it (an undefined instance).
        { path: "/bad.wat", data: '(component (export "wasi:http/incoming-handler@0.2.12" (instance $nowhere)))\n' },
      ],
      config: { entrypoint: ["/handler.wasm"], env: ["PATH=/", "GREETING=from the image"] },
    });
    const r = await env.cd.ctr(["images", "import", archive]);
    if (r.code !== 0) throw new Error(`import ${archive}: ${r.stderr}`);
  }, 1_800_000);
  afterAll(async () => {
    if (!env) return;
    const ns = env.cd.namespace;
    await env.stop();
    for (const d of [runtimeRoot(ns), containerStateDir(ns), logs]) rmSync(d, { recursive: true, force: true });
  }, T);

  /** `ctr run -d` of the handler; resolves once it serves, with its base URL and log file. */
  async function serve(id: string, extra: string[] = [], opts: { hostNet?: boolean; module?: string } = {}) {
    const port = freePort();
    const log = join(logs, `${id}.log`);
    const net = opts.hostNet === false ? [] : ["--net-host", "--env", `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${port}`];
    await ctrOk([
      "run",
      "-d",
      "--runtime",
      RUNTIME,
      "--log-uri",
      `file://${log}`,
      ...net,
      ...extra,
      IMAGE,
      id,
      opts.module ?? "/handler.wasm",
    ]);
    const up = await waitFile(log, (t) => t.includes("bunwasi: serving wasi:http on"), 30_000);
    if (!up) throw new Error(`${id} never served; log:\n${fileText(log)}\n${env.cd.logTail(30)}`);
    return { base: `http://127.0.0.1:${port}`, log };
  }

  /** SIGTERM (ctr's default), wait for the exit, delete; the exit code. */
  async function stop(id: string): Promise<number> {
    await ctrOk(["task", "kill", id]);
    await waitStatus(id, "STOPPED", 45_000);
    const code = await deleteTask(id);
    await ctrOk(["containers", "rm", id]);
    return code;
  }

  test(
    "requests answered; env without the service's variables; 1 MiB both ways; 50 concurrent; an outgoing request; guest logs in the container log; SIGTERM exits 0",
    async () => {
      const id = uid("serve");
      const { base, log } = await serve(id, ["--env", "WASMTIME_HTTP_PROXY_BACKLOG=64"]);
      let stopped = false;
      try {
        const hello = await fetch(`${base}/`);
        expect(hello.status).toBe(200);
        expect(await hello.text()).toBe("hello from wasi:http\n");

        expect(await (await fetch(`${base}/env/GREETING`)).text()).toBe("from the image");
        expect(await (await fetch(`${base}/env/WASMTIME_HTTP_PROXY_SOCKET_ADDR`)).text()).toBe("unset");
        expect(await (await fetch(`${base}/env/WASMTIME_HTTP_PROXY_BACKLOG`)).text()).toBe("unset");

        const body = new Uint8Array(1 << 20);
        for (let i = 0; i < body.length; i++) body[i] = (i * 31 + (i >> 9)) & 0xff;
        const echo = await fetch(`${base}/echo`, { method: "POST", body });
        expect(echo.status).toBe(200);
        const back = new Uint8Array(await echo.arrayBuffer());
        expect(back.length).toBe(body.length);
        expect(Buffer.compare(Buffer.from(back), Buffer.from(body))).toBe(0);

        const many = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            fetch(`${base}/echo`, { method: "POST", body: `n${i}` }).then(async (r) => [r.status, await r.text()]),
          ),
        );
        expect(many).toEqual(Array.from({ length: 50 }, (_, i) => [200, `n${i}`]));

        const upstream = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: (req) => new Response(`up ${new URL(req.url).pathname}`) });
        try {
          const r = await fetch(`${base}/fetch/127.0.0.1:${upstream.port}/x/y`);
          expect(await r.text()).toBe("upstream 200: up /x/y");
        } finally {
          upstream.stop(true);
        }

        // The shim compiled it with the http library while runc created the container.
        expect(fileText(log)).toContain("(from the compile cache)");
        expect(await (await fetch(`${base}/log`)).text()).toBe("logged\n");
        expect(await waitFile(log, (t) => t.includes("guest says hello on stdout") && t.includes("guest says hello on stderr"))).toBe(true);

        stopped = true;
        expect(await stop(id)).toBe(0);
      } finally {
        if (!stopped) await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]).then(() => stop(id).catch(() => 0));
      }
    },
    T,
  );

  test(
    "a trapping handler answers 500 (trap in the container log) and the service keeps serving",
    async () => {
      const id = uid("trap");
      const { base, log } = await serve(id);
      try {
        const r = await fetch(`${base}/trap`);
        expect(r.status).toBe(500);
        await r.text();
        for (let i = 0; i < 3; i++) {
          const ok = await fetch(`${base}/`);
          expect(ok.status).toBe(200);
          expect(await ok.text()).toBe("hello from wasi:http\n");
        }
        expect(await waitFile(log, (t) => t.includes("wasm `unreachable` instruction executed"))).toBe(true);
      } finally {
        expect(await stop(id)).toBe(0);
      }
    },
    T,
  );

  test(
    "SIGTERM during a request: the request completes, new connections are refused, then exit 0",
    async () => {
      const id = uid("grace");
      const { base, log } = await serve(id);
      const slow = fetch(`${base}/sleep/2000`).then(async (r) => [r.status, await r.text()]);
      // The guest says so on stderr before it waits.
      expect(await waitFile(log, (t) => t.includes("guest sleeping"), 20_000)).toBe(true);
      await ctrOk(["task", "kill", id]);
      // Once the stop is under way the listener is closed.
      let refused = false;
      for (let i = 0; i < 200 && !refused; i++) {
        try {
          await fetch(`${base}/`, { keepalive: false });
          await Bun.sleep(10);
        } catch {
          refused = true;
        }
      }
      expect(refused).toBe(true);
      expect(await slow).toEqual([200, "slept 2000\n"]);
      await waitStatus(id, "STOPPED", 45_000);
      expect(await deleteTask(id)).toBe(0);
      await ctrOk(["containers", "rm", id]);
    },
    T,
  );

  test(
    "a second signal during the drain ends it at once: exit 128 + that signal (SIGTERM, then SIGINT → 130), the request cut short",
    async () => {
      const id = uid("second");
      // A grace period of ten minutes: only the second signal can end this drain within the test.
      const { base, log } = await serve(id, ["--env", "BUNWASI_HTTP_GRACE_MS=600000"]);
      const slow = fetch(`${base}/sleep/300000`).then(
        (r) => `answered ${r.status}`,
        () => "cut off",
      );
      expect(await waitFile(log, (t) => t.includes("guest sleeping"), 20_000)).toBe(true);
      await ctrOk(["task", "kill", id]);
      // The executor says when the drain is under way, and what a second signal does.
      expect(
        await waitFile(
          log,
          (t) => t.includes("SIGTERM: no new connections; draining 1 request(s) for up to 600000 ms (a second signal ends it at once)"),
          20_000,
        ),
      ).toBe(true);
      await ctrOk(["task", "kill", "-s", "SIGINT", id]);
      await waitStatus(id, "STOPPED", 45_000);
      expect(await deleteTask(id)).toBe(130);
      await ctrOk(["containers", "rm", id]);
      expect(fileText(log)).toContain("bunwasi: wasi:http: SIGINT during the drain: 1 request(s) cut short");
      expect(await slow).toBe("cut off");
    },
    T,
  );

  test(
    "default address 0.0.0.0:8080 in the container's own network namespace",
    async () => {
      const id = uid("netns");
      const log = join(logs, `${id}.log`);
      await ctrOk(["run", "-d", "--runtime", RUNTIME, "--log-uri", `file://${log}`, IMAGE, id, "/handler.wasm"]);
      try {
        expect(await waitFile(log, (t) => t.includes("bunwasi: serving wasi:http on http://0.0.0.0:8080/"), 30_000)).toBe(true);
        const pid = Number(
          (await ctrOk(["task", "ls"]))
            .split("\n")
            .find((l) => l.startsWith(`${id} `))
            ?.trim()
            .split(/\s+/)[1],
        );
        expect(pid).toBeGreaterThan(0);
        const bun = join(REPO, "node_modules/.bin/bun");
        const p = Bun.spawn(
          ["nsenter", `--net=/proc/${pid}/ns/net`, bun, "-e", 'console.log(await (await fetch("http://127.0.0.1:8080/")).text())'],
          { stdout: "pipe", stderr: "pipe" },
        );
        const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
        expect(err).toBe("");
        expect(out).toBe("hello from wasi:http\n\n");
        expect(code).toBe(0);
      } finally {
        expect(await stop(id)).toBe(0);
      }
    },
    T,
  );

  test(
    "a service given as WAT text is served like its binary (compiled by the shim, from the cache); text wasmtime cannot parse: 125 and its reason",
    async () => {
      const id = uid("wat");
      const { base, log } = await serve(id, [], { module: "/handler.wat" });
      try {
        expect(await (await fetch(`${base}/`)).text()).toBe("hello from wasi:http\n");
        expect(await (await fetch(`${base}/env/GREETING`)).text()).toBe("from the image");
        const echo = await fetch(`${base}/echo`, { method: "POST", body: "text in, text out" });
        expect(await echo.text()).toBe("text in, text out");
        // The shim compiled the text with the http library at Create, keyed by the text.
        expect(fileText(log)).toContain("(from the compile cache)");
      } finally {
        expect(await stop(id)).toBe(0);
      }
      const bad = await env.run(IMAGE, uid("bad-wat"), ["/bad.wat"], {
        extra: ["--net-host", "--env", `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${freePort()}`],
      });
      expect(bad.code).toBe(125);
      expect(bad.stderr).toContain("bunwasi: wasi:http: wat2wasm: ");
      expect(bad.stderr).toContain("$nowhere");
    },
    T,
  );

  test(
    "a component with an unsatisfied import: 125 and the import named",
    async () => {
      const r = await env.run(IMAGE, uid("missing"), ["/missing.wasm"], {
        extra: ["--net-host", "--env", `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${freePort()}`],
      });
      expect(r.code).toBe(125);
      expect(r.stderr).toContain("bunwasi: wasi:http: link: ");
      expect(r.stderr).toContain("bunwasi:test/missing");
    },
    T,
  );
});
