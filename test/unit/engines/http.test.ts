// wasi:http services in-process: export sniffing, the service's settings, and the real host
// library (build/http-host) serving test/wasm/http/handler.c on loopback: requests, a 1 MiB
// body both ways, concurrency, a trap answering 500, a graceful stop that lets an in-flight
// request finish, a link error, and the compile cache keyed to the library.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CompileCache } from "../../../src/engines/cache.ts";
import { EXIT_ENGINE_ERROR } from "../../../src/engines/engine.ts";
import { componentExports, isHttpService } from "../../../src/engines/wasmtime/http/exports.ts";
import { compileHttpComponent, httpHost } from "../../../src/engines/wasmtime/http/ffi.ts";
import { httpCacheKey, requireHttpHost } from "../../../src/engines/wasmtime/http/library.ts";
import { HttpConfigError, HttpService, httpSettings, serveHttp } from "../../../src/engines/wasmtime/http/serve.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { component, prepare, prepareComponents, REPO, tmp, WASM_DIR, wasm } from "./helpers.ts";

const HANDLER = join(WASM_DIR, "http", "handler.wasm");
const MISSING = join(WASM_DIR, "http", "missing.wasm");

function sh(script: string) {
  const r = Bun.spawnSync(["bash", join(REPO, "scripts", script)], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`scripts/${script} failed: ${r.stderr.toString()}`);
}

let source: Uint8Array;

beforeAll(() => {
  prepare();
  prepareComponents();
  sh("http-host.sh");
  sh("build-http-components.sh");
  source = new Uint8Array(readFileSync(HANDLER));
}, 1_800_000);

describe("export sniffing", () => {
  test("the handler exports wasi:http/incoming-handler; a command exports wasi:cli/run; a core module is no component", () => {
    expect(componentExports(source)).toEqual(["wasi:http/incoming-handler@0.2.12"]);
    expect(isHttpService(source)).toBe(true);
    const command = new Uint8Array(readFileSync(component("wasi-demo-app")));
    expect(componentExports(command)?.some((n) => n.startsWith("wasi:cli/run@0.2."))).toBe(true);
    expect(isHttpService(command)).toBe(false);
    // The engine says so to the executor, which then keeps its signals in JavaScript to drain.
    expect(wasmtime.isService?.(source)).toBe(true);
    expect(wasmtime.isService?.(command)).toBe(false);
    expect(componentExports(new Uint8Array(readFileSync(wasm("wasi-demo-app"))))).toBeUndefined();
    // Truncated: no answer rather than a wrong one.
    expect(componentExports(source.subarray(0, source.length - 3))).toBeUndefined();
  });
});

describe("settings from the environment", () => {
  test("defaults; runwasi's variables are taken out of the guest's environment", () => {
    expect(httpSettings([["A", "1"]])).toEqual({ addr: "0.0.0.0:8080", backlog: 100, guestEnv: [["A", "1"]] });
    expect(
      httpSettings([
        ["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:9000"],
        ["WASMTIME_HTTP_PROXY_BACKLOG", "7"],
        ["B", "2"],
        ["WASMTIME_HTTP_BACKLOG", "8"],
      ]),
    ).toEqual({ addr: "127.0.0.1:9000", backlog: 8, guestEnv: [["B", "2"]] });
  });
  test("a backlog that is not a number is refused", () => {
    expect(() => httpSettings([["WASMTIME_HTTP_PROXY_BACKLOG", "lots"]])).toThrow(HttpConfigError);
  });
});

describe("the host library serving the handler", () => {
  let svc: HttpService;
  let base: string;
  beforeAll(() => {
    svc = HttpService.start({
      source,
      env: [
        ["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"],
        ["GREETING", "hi there"],
      ],
      args: ["handler.wasm"],
    });
    base = `http://127.0.0.1:${svc.port}`;
  });
  afterAll(async () => {
    await svc?.stop(10_000);
  });

  test("GET / answers 200 from the guest", async () => {
    const r = await fetch(`${base}/`);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("hello from wasi:http\n");
  });

  test("the guest sees its environment without the service's variables", async () => {
    expect(await (await fetch(`${base}/env/GREETING`)).text()).toBe("hi there");
    expect(await (await fetch(`${base}/env/WASMTIME_HTTP_PROXY_SOCKET_ADDR`)).text()).toBe("unset");
  });

  test("a 1 MiB body goes in and comes back unchanged", async () => {
    const body = new Uint8Array(1 << 20);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 11)) & 0xff;
    const r = await fetch(`${base}/echo`, { method: "POST", body });
    expect(r.status).toBe(200);
    const back = new Uint8Array(await r.arrayBuffer());
    expect(back.length).toBe(body.length);
    expect(Buffer.compare(Buffer.from(back), Buffer.from(body))).toBe(0);
  });

  test("50 concurrent requests are all answered", async () => {
    const rs = await Promise.all(
      Array.from({ length: 50 }, (_, i) => fetch(`${base}/echo`, { method: "POST", body: `request ${i}` }).then((r) => r.text())),
    );
    expect(rs).toEqual(Array.from({ length: 50 }, (_, i) => `request ${i}`));
  });

  test("a trapping handler answers 500, and the next request is served", async () => {
    const before = svc.counters().failed;
    const r = await fetch(`${base}/trap`);
    expect(r.status).toBe(500);
    await r.text();
    expect(svc.counters().failed).toBe(before + 1);
    const ok = await fetch(`${base}/`);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe("hello from wasi:http\n");
  });

  test("an outgoing request goes through wasi:http/outgoing-handler", async () => {
    const upstream = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: (req) => new Response(`upstream saw ${new URL(req.url).pathname}`),
    });
    try {
      const r = await fetch(`${base}/fetch/127.0.0.1:${upstream.port}/some/path`);
      expect(r.status).toBe(200);
      expect(await r.text()).toBe("upstream 200: upstream saw /some/path");
    } finally {
      upstream.stop(true);
    }
  });
});

describe("lifecycle", () => {
  test("a stop lets the in-flight request finish, refuses new connections, and drains", async () => {
    const svc = HttpService.start({ source, env: [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]], args: [] });
    const base = `http://127.0.0.1:${svc.port}`;
    const slow = fetch(`${base}/sleep/700`).then(async (r) => [r.status, await r.text()] as const);
    // The request is in the guest before the stop.
    for (let i = 0; i < 200 && svc.counters().inFlight === 0; i++) await Bun.sleep(10);
    expect(svc.counters().inFlight).toBe(1);
    const stopping = svc.stop(20_000);
    expect(await slow).toEqual([200, "slept 700\n"]);
    expect(await stopping).toBe(true);
    expect(svc.stopped()).toBe(true);
    let refused = false;
    try {
      await fetch(`${base}/`);
    } catch {
      refused = true;
    }
    expect(refused).toBe(true);
  });

  test("serveHttp: a kill ends a graceful stop with 0; a request outliving the grace period → 128+s", async () => {
    const env: [string, string][] = [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]];
    const serving = async (lines: string[]) => {
      for (let i = 0; i < 500 && lines.length === 0; i++) await Bun.sleep(10);
      const m = /^bunwasi: serving wasi:http on (http:\/\/127\.0\.0\.1:\d+)\/ \(compiled at start\)\n$/.exec(lines[0] ?? "");
      expect(m).not.toBeNull();
      return m?.[1] as string;
    };
    const lines: string[] = [];
    const ac = new AbortController();
    const done = serveHttp({ source, env, args: [] }, ac.signal, (m) => lines.push(m));
    const base = await serving(lines);
    expect((await fetch(`${base}/`)).status).toBe(200);
    ac.abort(15);
    const r = await done;
    expect(r.code).toBe(0);
    expect(r.stats.requests).toBe(1);

    const prev = process.env.BUNWASI_HTTP_GRACE_MS;
    process.env.BUNWASI_HTTP_GRACE_MS = "100";
    try {
      const lines2: string[] = [];
      const ac2 = new AbortController();
      let svc: HttpService | undefined;
      const done2 = serveHttp(
        { source, env, args: [] },
        ac2.signal,
        (m) => lines2.push(m),
        (s) => {
          svc = s;
        },
      );
      const base2 = await serving(lines2);
      const slow = fetch(`${base2}/sleep/3000`).catch(() => "cut off");
      // The request is inside the guest when the kill comes.
      for (let i = 0; i < 500 && svc?.counters().inFlight !== 1; i++) await Bun.sleep(10);
      expect(svc?.counters().inFlight).toBe(1);
      ac2.abort(15);
      expect((await done2).code).toBe(128 + 15);
      expect(lines2.join("")).toContain("request(s) still in flight after the grace period");
      await slow;
    } finally {
      if (prev === undefined) delete process.env.BUNWASI_HTTP_GRACE_MS;
      else process.env.BUNWASI_HTTP_GRACE_MS = prev;
    }
  });

  test("an unsatisfied import fails the start with the import named; so does a busy address", () => {
    expect(() => HttpService.start({ source: new Uint8Array(readFileSync(MISSING)), env: [], args: [] })).toThrow(
      /link: .*bunwasi:test\/missing/,
    );
    const holder = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("") });
    try {
      expect(() => HttpService.start({ source, env: [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", `127.0.0.1:${holder.port}`]], args: [] })).toThrow(
        /bind 127\.0\.0\.1:\d+: .*in use/i,
      );
    } finally {
      holder.stop(true);
    }
  });

  test("the Runner refuses to serve unless the caller owns its network (httpServices)", async () => {
    const runner = await wasmtime.load();
    const d = tmp("bunwasi-http-");
    try {
      const r = await runner.run({ modulePath: HANDLER, args: [], env: {}, stderr: { kind: "path", path: join(d, "err") } });
      expect(r.code).toBe(EXIT_ENGINE_ERROR);
      expect(readFileSync(join(d, "err"), "utf8")).toContain("served only by a container's own executor");
    } finally {
      runner.close();
    }
  });
});

describe("compile cache", () => {
  test("the key names the http library, not libwasmtime; a cached artifact is mapped at start", async () => {
    const lib = requireHttpHost();
    const key = httpCacheKey(source, lib);
    expect(key).not.toBe(await wasmtime.compiler?.cacheKey(new Uint8Array(readFileSync(component("wasi-demo-app")))));
    // The engine's compiler keys a wasi:http service to the http library.
    expect(await wasmtime.compiler?.cacheKey(source)).toBe(key);
    const cache = new CompileCache({ dir: tmp("bunwasi-http-cache-") });
    await cache.put(key, compileHttpComponent(httpHost(lib), source));
    const svc = HttpService.start({ source, env: [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]], args: [], cache });
    expect(svc.compiled).toBe(false);
    expect(await svc.stop(10_000)).toBe(true);
  });

  test("the library file and its version are what the executor directory ships", () => {
    const files = wasmtime.executor().files.map((f) => f.name);
    expect(files).toContain("libbunwasi_http.so");
    expect(files).toContain("libbunwasi_http.version");
    expect(existsSync(requireHttpHost())).toBe(true);
  });
});
