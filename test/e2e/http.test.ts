// wasi:http services under the real containerd (1.6) and the compiled shim: `ctr run` of
// test/wasm/http/handler.c as a component kept in a Linux-rootfs image. The container runs
// in the host's network namespace (`--net-host`) on a free loopback port given through
// runwasi's WASMTIME_HTTP_PROXY_SOCKET_ADDR, so the test reaches it directly; one test runs it
// in a network namespace of its own on the default 0.0.0.0:8080 and reaches it with
// nsenter. The scenarios shared mode runs too (requests, a trap, the SIGTERM drain, a second
// signal) come from test/support/http-services.ts; the rest is this mode's own.
// Needs root, containerd, runc, nsenter.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { fileText, waitFile } from "../support/ctr-tasks.ts";
import { freePort, HELLO, HTTP_IMAGE, httpServiceScenarios, httpServices, runScript } from "../support/http-services.ts";
import { REPO, RUNTIME, type ShimEnv, shimEnv, WASM } from "../support/shim-env.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc") && !!Bun.which("nsenter");
// Stated as a test so that a machine without them fails loudly instead of skipping.
test("prerequisites: root, containerd, runc, nsenter", () => expect(canRun).toBe(true));

const T = 90_000;
const IMAGE = HTTP_IMAGE;

let seq = 0;
const uid = (what: string) => `http-${what}-${process.pid}-${seq++}`;

describe("wasi:http services through containerd-shim-wasmtime-v1, normal mode", () => {
  let env: ShimEnv;
  let logs: string;

  beforeAll(async () => {
    runScript("build-components.sh");
    runScript("http-host.sh");
    runScript("build-http-components.sh");
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

  const services = httpServices({
    runtime: RUNTIME,
    cd: () => env.cd,
    logs: () => logs,
    // In the host's network namespace, so the test reaches the service directly.
    addressArgs: (port) => ["--net-host", "--env", `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${port}`],
    diagnostics: () => env.cd.logTail(30),
  });
  const { serve, stop, ctrOk, runDetached } = services;

  httpServiceScenarios(
    services,
    {
      mode: "normal",
      uid,
      serveTitle:
        "requests answered; env without the service's variables; 1 MiB both ways; 50 concurrent; an outgoing request; guest logs in the container log; SIGTERM exits 0",
      moreRequests: async (base) => {
        const upstream = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: (req) => new Response(`up ${new URL(req.url).pathname}`) });
        try {
          const r = await fetch(`${base}/fetch/127.0.0.1:${upstream.port}/x/y`);
          expect(await r.text()).toBe("upstream 200: up /x/y");
        } finally {
          upstream.stop(true);
        }
      },
      secondSignal: {
        title:
          "a second signal during the drain ends it at once: exit 128 + that signal (SIGTERM, then SIGINT → 130), the request cut short",
        draining: "SIGTERM: no new connections; draining 1 request(s) for up to 600000 ms (a second signal ends it at once)",
        cut: "bunwasi: wasi:http: SIGINT during the drain: 1 request(s) cut short",
      },
    },
    T,
  );

  test(
    "normal mode: default address 0.0.0.0:8080 in the container's own network namespace",
    async () => {
      const id = uid("netns");
      const log = await runDetached(id, ["/handler.wasm"], IMAGE, RUNTIME);
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
    "normal mode: a service given as WAT text is served like its binary (compiled by the shim, from the cache); text wasmtime cannot parse: 125 and its reason",
    async () => {
      const id = uid("wat");
      const { base, log } = await serve(id, { args: ["/handler.wat"] });
      try {
        expect(await (await fetch(`${base}/`)).text()).toBe(HELLO);
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
    "normal mode: a component with an unsatisfied import: 125 and the import named",
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
