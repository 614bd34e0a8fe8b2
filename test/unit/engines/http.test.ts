// wasi:http services in-process: export sniffing, the service's settings, and the real host
// library (build/http-host) serving test/wasm/http/handler.c on loopback: requests, a 1 MiB
// body both ways, concurrency, a trap answering 500, a graceful stop that lets an in-flight
// request finish, a link error, the compile cache keyed to the library, and the service's
// bounds (guests at once, memory of all its stores together).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CompileCache } from "../../../src/engines/cache.ts";
import { EXIT_ENGINE_ERROR } from "../../../src/engines/engine.ts";
import { componentExports, isHttpService } from "../../../src/engines/wasmtime/http/exports.ts";
import { compileHttpComponent, httpHost } from "../../../src/engines/wasmtime/http/ffi.ts";
import { httpCacheKey, requireHttpHost } from "../../../src/engines/wasmtime/http/library.ts";
import { HttpConfigError, HttpService, httpSettings, serveHttp, stopGraceMs } from "../../../src/engines/wasmtime/http/serve.ts";
import { watComponentExports } from "../../../src/engines/wasmtime/http/wat-exports.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { wasmShape } from "../../../src/engines/wasmtime/wasm-shape.ts";
import { formatCpuList } from "../../../src/linux/cpuset.ts";
import { schedGetaffinity } from "../../../src/linux/libc.ts";
import { until } from "../../support/until.ts";
import { component, prepare, prepareComponents, REPO, tmp, WASM_DIR, wasm } from "./helpers.ts";

const HANDLER = join(WASM_DIR, "http", "handler.wasm");
const MISSING = join(WASM_DIR, "http", "missing.wasm");
/** handler.wasm as component text (`wasm-tools print`, scripts/build-http-components.sh). */
const HANDLER_WAT = join(WASM_DIR, "http", "handler.wat");
const WASM_TOOLS = join(REPO, "build", "cargo", "bin", "wasm-tools");

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

describe("a service given as WAT text", () => {
  const text = (s: string) => new TextEncoder().encode(s);

  test("the top-level exports read from text are the binary's, for every test component printed as text", () => {
    const files = [
      HANDLER,
      MISSING,
      ...["wasi-demo-app", "funcs", "exit-code", "missing-import", "busy", "trap", "grow"].map((c) => component(c)),
    ];
    for (const f of files) {
      const printed = Bun.spawnSync([WASM_TOOLS, "print", f], { stdout: "pipe", stderr: "pipe" });
      expect(printed.exitCode).toBe(0);
      const fromText = watComponentExports(printed.stdout);
      expect(fromText).toBeDefined();
      expect({ f, names: fromText }).toEqual({ f, names: componentExports(new Uint8Array(readFileSync(f))) });
    }
    const wat = new Uint8Array(readFileSync(HANDLER_WAT));
    expect(isHttpService(wat)).toBe(true);
    expect(wasmtime.isService?.(wat)).toBe(true);
  });

  test("exports and inline exports of the component count; a nested definition's own exports, comments and strings do not", () => {
    const names = watComponentExports(
      // (raw: the escapes are WAT's, for the scanner to decode)
      text(String.raw`;; a comment (export "no")
      (component $outer (; a (; nested ;) block comment ;)
        (component $inner (export "inner-only" (func $f)) (import "x" (func $f)))
        (type (instance (export "wasi:http/incoming-handler@0.2.0" (instance))))
        (instance $"quoted id" (export "inline\u{2d}one") (export "inline-two"))
        (func (@name "not an export") (export "f\"q") (canon lift (core func 0)))
        (export $e "wasi:http/incoming-handler@0.2.3" (instance $i))
      )`),
    );
    expect(names).toEqual(["inline-one", "inline-two", 'f"q', "wasi:http/incoming-handler@0.2.3"]);
    expect(isHttpService(text('(component (export "wasi:http/incoming-handler@0.2.0" (instance 0)))'))).toBe(true);
    expect(isHttpService(text('(component (type (instance (export "wasi:http/incoming-handler@0.2.0" (instance)))))'))).toBe(false);
    expect(isHttpService(text('(component (export "wasi:http/incoming-handler@0.3.0" (instance 0)))'))).toBe(false);
    // Core module text, text that does not tokenize, or two top-level forms: no answer.
    expect(watComponentExports(text('(module (export "x" (func 0)))'))).toBeUndefined();
    expect(watComponentExports(text('(component (export "unclosed)'))).toBeUndefined();
    expect(watComponentExports(text("(component) (component)"))).toBeUndefined();
  });

  test("the engine compiles and keys the text with the http library, and serves it; text wasmtime cannot parse → 125 with its reason", async () => {
    const wat = new Uint8Array(readFileSync(HANDLER_WAT));
    const lib = requireHttpHost();
    // The shim's compile (at Create): keyed to the library, the text's own digest.
    expect(await wasmtime.compiler?.cacheKey(wat)).toBe(httpCacheKey(wat, lib));
    const dir = tmp("bunwasi-http-wat-");
    const cacheDir = join(dir, "cache");
    const cache = new CompileCache({ dir: cacheDir });
    await cache.put(httpCacheKey(wat, lib), (await wasmtime.compiler?.compile(wat)) as Uint8Array);
    writeFileSync(join(dir, "handler.wat"), wat);
    const runner = await wasmtime.load({ cacheDir, thisThread: true });
    try {
      const ac = new AbortController();
      const err = join(dir, "err");
      const run = runner.run({
        modulePath: join(dir, "handler.wat"),
        args: ["handler.wat"],
        env: { WASMTIME_HTTP_PROXY_SOCKET_ADDR: "127.0.0.1:0" },
        stderr: { kind: "path", path: err },
        httpServices: true,
        signal: ac.signal,
      });
      let base: string | undefined;
      for (let i = 0; i < 1000 && !base; i++) {
        base = /serving wasi:http on (http:\/\/127\.0\.0\.1:\d+)\/ \(from the compile cache\)/.exec(
          existsSync(err) ? readFileSync(err, "utf8") : "",
        )?.[1];
        if (!base) await Bun.sleep(10);
      }
      expect(base).toBeDefined();
      expect(await (await fetch(`${base}/`)).text()).toBe("hello from wasi:http\n");
      ac.abort(15);
      expect((await run).code).toBe(0);

      writeFileSync(join(dir, "bad.wat"), '(component (export "wasi:http/incoming-handler@0.2.12" (instance $nowhere)))');
      const bad = await runner.run({
        modulePath: join(dir, "bad.wat"),
        args: [],
        env: { WASMTIME_HTTP_PROXY_SOCKET_ADDR: "127.0.0.1:0" },
        stderr: { kind: "path", path: join(dir, "bad-err") },
        httpServices: true,
        signal: new AbortController().signal,
      });
      expect(bad.code).toBe(EXIT_ENGINE_ERROR);
      expect(readFileSync(join(dir, "bad-err"), "utf8")).toMatch(/^bunwasi: wasi:http: wat2wasm: .*\$nowhere/s);
    } finally {
      runner.close();
    }
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

test("a library without a call this bunwasi binds (an older build) is refused at load, naming the call", () => {
  // libwasmtime has none of the library's calls: the first one missing is named.
  const other = join(REPO, "build", "lib", "libwasmtime.so");
  expect(() => httpHost(other)).toThrow(
    /^Symbol "bunwasi_http_\w+" not found in .*: not the wasi:http host library of this bunwasi \(an older build\?\); rebuild it \(scripts\/http-host\.sh\)$/,
  );
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

  test("every request gets a fresh instance: what one leaves in linear memory is gone for the next", async () => {
    // One after another on one connection: the same worker thread, its idle-time spare
    // instance and the same pooled memory slot, reset in place, again and again.
    for (let i = 0; i < 20; i++) expect(await (await fetch(`${base}/count`)).text()).toBe("count 1 8\n");
    // At once: several stores live together.
    const rs = await Promise.all(Array.from({ length: 20 }, () => fetch(`${base}/count`).then((r) => r.text())));
    expect(rs).toEqual(Array.from({ length: 20 }, () => "count 1 8\n"));
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

  test("each request is timed into the service's latency histogram: served, failed (500) and slow ones", async () => {
    const total = (l: { counts: readonly number[] }) => l.counts.reduce((a, b) => a + b, 0);
    const before = svc.counters();
    // Prometheus' usual buckets, 0.5 ms to 30 s, from the library.
    expect(before.latency.bounds).toEqual([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]);
    expect(before.latency.counts.length).toBe(16);
    // Every request received so far was observed once (none is in flight between tests).
    expect(total(before.latency)).toBe(before.requests);
    for (let i = 0; i < 4; i++) await (await fetch(`${base}/`)).text();
    const trap = await fetch(`${base}/trap`);
    expect(trap.status).toBe(500);
    await trap.text();
    // A guest that sleeps 30 ms cannot have taken less: it lands above the 25 ms bound.
    expect(await (await fetch(`${base}/sleep/30`)).text()).toBe("slept 30\n");
    const after = svc.counters();
    expect(after.requests - before.requests).toBe(6);
    expect(total(after.latency) - total(before.latency)).toBe(6);
    expect(after.latency.sum - before.latency.sum).toBeGreaterThanOrEqual(0.03);
    const upTo25ms = (l: { counts: readonly number[] }) => l.counts.slice(0, 6).reduce((a, b) => a + b, 0);
    expect(total(after.latency) - upTo25ms(after.latency) - (total(before.latency) - upTo25ms(before.latency))).toBeGreaterThanOrEqual(1);
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

describe("a service's bounds (issue 16)", () => {
  test("at most max_requests guests run at once; the other requests wait their turn and are all answered", async () => {
    const svc = HttpService.start({ source, env: [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]], args: [], maxRequests: 2 });
    try {
      const base = `http://127.0.0.1:${svc.port}`;
      const answers = Promise.all(Array.from({ length: 5 }, () => fetch(`${base}/sleep/300`).then((r) => r.status)));
      await until("two guests running", () => svc.counters().inFlight === 2);
      let most = 0;
      for (let i = 0; i < 40; i++) {
        most = Math.max(most, svc.counters().inFlight);
        await Bun.sleep(10);
      }
      expect(most).toBe(2);
      expect(await answers).toEqual([200, 200, 200, 200, 200]);
    } finally {
      await svc.stop(10_000);
    }
  });

  test("the memory limit bounds all of its stores together: with room for one instance, a second request fails (500) while the first runs, and is served once it is over", async () => {
    // What one instance of the handler makes at start: its memory and its tables' elements.
    const shape = wasmShape(source);
    const one = shape.memories.reduce((a, b) => a + b, 0) + shape.tables.reduce((a, b) => a + b, 0) * 8;
    const svc = HttpService.start({
      source,
      env: [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]],
      args: [],
      threads: 1,
      memoryLimitBytes: Math.floor(one * 1.5),
    });
    try {
      const base = `http://127.0.0.1:${svc.port}`;
      const slow = fetch(`${base}/sleep/2000`).then(async (r) => [r.status, await r.text()] as const);
      await until("the first guest running", () => svc.counters().inFlight === 1);
      const second = await fetch(`${base}/`);
      expect(second.status).toBe(500);
      await second.text();
      expect(await slow).toEqual([200, "slept 2000\n"]);
      // Its store is dropped once its thread is idle: then there is room again.
      for (let i = 0; ; i++) {
        const r = await fetch(`${base}/`);
        const text = await r.text();
        if (r.status === 200) {
          expect(text).toBe("hello from wasi:http\n");
          break;
        }
        if (i > 500) throw new Error(`no request served again (last: ${r.status})`);
        await Bun.sleep(20);
      }
    } finally {
      await svc.stop(10_000);
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
      const done2 = serveHttp({ source, env, args: [] }, ac2.signal, (m) => lines2.push(m), {
        onServing: (s) => {
          svc = s;
        },
      });
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

  test("serveHttp: a second kill during the drain ends it at once with 128 + that signal, the server aborted and the request cut", async () => {
    const env: [string, string][] = [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]];
    const lines: string[] = [];
    const ac = new AbortController();
    const now = new AbortController();
    // Ten minutes: only the second signal can end this drain while the test runs.
    const prev = process.env.BUNWASI_HTTP_GRACE_MS;
    process.env.BUNWASI_HTTP_GRACE_MS = "600000";
    let svc: HttpService | undefined;
    const done = serveHttp({ source, env, args: [] }, ac.signal, (m) => lines.push(m), {
      onServing: (s) => {
        svc = s;
      },
      stopNow: now.signal,
    });
    for (let i = 0; i < 500 && lines.length === 0; i++) await Bun.sleep(10);
    const base = /on (http:\/\/127\.0\.0\.1:\d+)\//.exec(lines[0] ?? "")?.[1];
    expect(base).toBeDefined();
    const slow = fetch(`${base}/sleep/1500`).then(
      async (r) => [r.status, await r.text()],
      () => "cut off",
    );
    for (let i = 0; i < 500 && svc?.counters().inFlight !== 1; i++) await Bun.sleep(10);
    expect(svc?.counters().inFlight).toBe(1);
    ac.abort(15);
    // The drain is under way when the second signal comes.
    for (let i = 0; i < 500 && lines.length < 2; i++) await Bun.sleep(10);
    expect(lines[1]).toBe(
      "bunwasi: wasi:http: SIGTERM: no new connections; draining 1 request(s) for up to 600000 ms (a second signal ends it at once)\n",
    );
    now.abort(2);
    const r = await done;
    if (prev === undefined) delete process.env.BUNWASI_HTTP_GRACE_MS;
    else process.env.BUNWASI_HTTP_GRACE_MS = prev;
    expect(r.code).toBe(128 + 2);
    expect(lines[2]).toBe("bunwasi: wasi:http: SIGINT during the drain: 1 request(s) cut short\n");
    // The server was aborted before the run ended (a daemon outlives it): freed, the request cut.
    expect(svc?.stopped()).toBe(true);
    expect(await slow).toBe("cut off");
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

  test("in a network namespace the caller names (the daemon's way): it listens there and its outgoing requests leave from there, the caller's thread stays in its own; the guest's output and the library's messages on the given fds; outgoing: false refuses them", async () => {
    expect(process.getuid?.()).toBe(0); // ip netns and setns need root
    const d = tmp("bunwasi-http-ns-");
    const out = openSync(join(d, "out"), "w");
    const err = openSync(join(d, "err"), "w");
    const ns = `bunwasi-http-${process.pid}`;
    const path = `/var/run/netns/${ns}`;
    const sh = (argv: string[]) => {
      const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
      if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.toString()}`);
      return r.stdout.toString();
    };
    sh(["ip", "netns", "add", ns]);
    // The same loopback port answers differently in the two namespaces: whichever answers the
    // guest's request says where its socket was made.
    const host = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("host's loopback") });
    const bun = join(REPO, "node_modules/.bin/bun");
    const inside = Bun.spawn(
      [
        "nsenter",
        `--net=${path}`,
        bun,
        "-e",
        `Bun.serve({ hostname: "127.0.0.1", port: ${host.port}, fetch: () => new Response("the namespace's loopback") }); console.log("up")`,
      ],
      { stdout: "pipe", stderr: "inherit" },
    );
    const services: HttpService[] = [];
    try {
      sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
      await new Response(inside.stdout).body?.getReader().read(); // "up"
      const own = readlinkSync("/proc/thread-self/ns/net");
      const start = (outgoing: boolean) => {
        const svc = HttpService.start({
          source,
          env: [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]],
          args: [],
          netns: path,
          outgoing,
          stdoutFd: out,
          stderrFd: err,
        });
        services.push(svc);
        return svc;
      };
      const svc = start(true);
      expect(readlinkSync("/proc/thread-self/ns/net")).toBe(own);
      // Reached from inside the namespace only: a request there, through nsenter.
      const get = (port: number, path_: string) =>
        sh([
          "nsenter",
          `--net=${path}`,
          bun,
          "-e",
          `const r = await fetch("http://127.0.0.1:${port}${path_}"); console.log(r.status, await r.text())`,
        ]).trim();
      expect(get(svc.port, `/fetch/127.0.0.1:${host.port}/`)).toBe("200 upstream 200: the namespace's loopback");
      expect(get(svc.port, "/log")).toBe("200 logged");
      expect(get(svc.port, "/trap")).toStartWith("500 ");
      expect(await svc.stop(10_000)).toBe(true);
      expect(readFileSync(join(d, "out"), "utf8")).toBe("guest says hello on stdout\n");
      const errText = readFileSync(join(d, "err"), "utf8");
      expect(errText).toContain("guest says hello on stderr\n");
      expect(errText).toContain("bunwasi: http: request failed");

      const denied = start(false);
      expect(get(denied.port, `/fetch/127.0.0.1:${host.port}/`)).toStartWith("502 ");
      expect(await denied.stop(10_000)).toBe(true);

      // A namespace that does not exist: a clear error, before anything is served.
      expect(() =>
        HttpService.start({ source, env: [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]], args: [], netns: `${path}-none` }),
      ).toThrow(`network namespace ${path}-none: `);
      expect(readlinkSync("/proc/thread-self/ns/net")).toBe(own);
    } finally {
      for (const svc of services) await svc.abort();
      inside.kill();
      await inside.exited;
      host.stop(true);
      Bun.spawnSync(["ip", "netns", "del", ns]);
      closeSync(out);
      closeSync(err);
    }
  });

  test("a hard stop (stopNow) after a stop cuts a guest spinning in wasm and one asleep: 128+9, the library's threads end", async () => {
    const lines: string[] = [];
    const term = new AbortController();
    const kill = new AbortController();
    let svc: HttpService | undefined;
    const done = serveHttp(
      // A grace longer than the test: only the hard stop can end the drain.
      {
        source,
        env: [
          ["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"],
          ["BUNWASI_HTTP_GRACE_MS", "600000"],
        ],
        args: [],
      },
      term.signal,
      (m) => lines.push(m),
      {
        stopNow: kill.signal,
        onServing: (s) => {
          svc = s;
        },
      },
    );
    for (let i = 0; i < 500 && !svc; i++) await Bun.sleep(10);
    const base = `http://127.0.0.1:${svc?.port}`;
    const spin = fetch(`${base}/spin`).then(
      () => "answered",
      () => "cut",
    );
    const asleep = fetch(`${base}/sleep/600000`).then(
      () => "answered",
      () => "cut",
    );
    for (let i = 0; i < 500 && svc?.counters().inFlight !== 2; i++) await Bun.sleep(10);
    expect(svc?.counters().inFlight).toBe(2);
    term.abort(15);
    await Bun.sleep(100);
    expect(svc?.stopped()).toBe(false);
    kill.abort(9);
    expect((await done).code).toBe(128 + 9);
    expect(await spin).toBe("cut");
    expect(await asleep).toBe("cut");
    expect(svc?.stopped()).toBe(true);
    const names = readdirSync("/proc/self/task").map((t) => {
      try {
        return readFileSync(`/proc/self/task/${t}/comm`, "utf8").trim();
      } catch {
        return "";
      }
    });
    expect(names.filter((n) => n.startsWith("bunwasi-http"))).toEqual([]);
  });

  test("a guest spinning in wasm does not starve the others: on one runtime thread, another request is still answered", async () => {
    const svc = HttpService.start({ source, env: [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]], args: [], threads: 1 });
    const base = `http://127.0.0.1:${svc.port}`;
    const spin = fetch(`${base}/spin`).then(
      () => "answered",
      () => "cut",
    );
    for (let i = 0; i < 500 && svc.counters().inFlight !== 1; i++) await Bun.sleep(10);
    expect(svc.counters().inFlight).toBe(1);
    // The only worker thread is in the spinning guest's wasm: only its epoch yields let this run.
    const hello = await fetch(`${base}/`);
    expect(await hello.text()).toBe("hello from wasi:http\n");
    expect(svc.counters().inFlight).toBe(1);
    expect(await svc.abort()).toBe(true);
    expect(await spin).toBe("cut");
  });

  // A narrower cpuset needs two CPUs to choose from (skipped, not passed, on one).
  const cpus = schedGetaffinity(0)[0] ?? [];
  test.if(cpus.length >= 2)(
    "cpus: every thread of the service is confined to them (those it starts later too); setCpus moves them all, and back to the caller's",
    async () => {
      const first = cpus[0] as number;
      const last = cpus[cpus.length - 1] as number;
      /** The service's threads (the library names them) as Cpus_allowed_list. */
      const serviceThreads = () =>
        readdirSync("/proc/self/task").flatMap((t) => {
          try {
            if (!readFileSync(`/proc/self/task/${t}/comm`, "utf8").startsWith("bunwasi-http-")) return [];
            return [/^Cpus_allowed_list:\s*(.*)$/m.exec(readFileSync(`/proc/self/task/${t}/status`, "utf8"))?.[1]];
          } catch {
            return [];
          }
        });
      const svc = HttpService.start({
        source,
        env: [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]],
        args: [],
        threads: 2,
        cpu: { cpus: [last] },
      });
      try {
        const base = `http://127.0.0.1:${svc.port}`;
        expect(await (await fetch(`${base}/`)).text()).toBe("hello from wasi:http\n");
        expect(serviceThreads().length).toBeGreaterThanOrEqual(3);
        expect(new Set(serviceThreads())).toEqual(new Set([String(last)]));
        svc.setCpus([first], cpus);
        expect(new Set(serviceThreads())).toEqual(new Set([String(first)]));
        // 20 at once: more than the workers, so the blocking pools may start threads now.
        await Promise.all(Array.from({ length: 20 }, () => fetch(`${base}/`).then((r) => r.text())));
        expect(new Set(serviceThreads())).toEqual(new Set([String(first)]));
        svc.setCpus(undefined, cpus);
        expect(new Set(serviceThreads())).toEqual(new Set([formatCpuList(cpus)]));
        // The caller's own thread was never moved.
        expect(schedGetaffinity(0)[0]).toEqual(cpus);
      } finally {
        await svc.stop(10_000);
      }
    },
  );

  test("the grace period comes from the container's env first, then the process's", () => {
    const prev = process.env.BUNWASI_HTTP_GRACE_MS;
    try {
      delete process.env.BUNWASI_HTTP_GRACE_MS;
      expect(stopGraceMs([])).toBe(30_000);
      process.env.BUNWASI_HTTP_GRACE_MS = "250";
      expect(stopGraceMs([["A", "1"]])).toBe(250);
      expect(stopGraceMs([["BUNWASI_HTTP_GRACE_MS", "7"]])).toBe(7);
      expect(stopGraceMs([["BUNWASI_HTTP_GRACE_MS", "x"]])).toBe(250);
    } finally {
      if (prev === undefined) delete process.env.BUNWASI_HTTP_GRACE_MS;
      else process.env.BUNWASI_HTTP_GRACE_MS = prev;
    }
  });

  test("the Runner refuses to serve unless the caller gives it a network (httpServices, httpNetwork)", async () => {
    const runner = await wasmtime.load();
    const d = tmp("bunwasi-http-");
    try {
      const r = await runner.run({ modulePath: HANDLER, args: [], env: {}, stderr: { kind: "path", path: join(d, "err") } });
      expect(r.code).toBe(EXIT_ENGINE_ERROR);
      expect(readFileSync(join(d, "err"), "utf8")).toContain("served only where its caller gives it a network");
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
    // The artifact its caller checked: mapped, not compiled.
    const svc = HttpService.start({
      source,
      env: [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]],
      args: [],
      artifact: cache.fileOf(key),
    });
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
