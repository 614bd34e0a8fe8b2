// Components through the wasmtime engine's Runner, in-process: the same contract as core
// modules (args, env, the root preopened as "/", stdio, exit codes, kill, memory limit,
// compile cache), plus what is particular to components ("#export" calls, link errors).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CompileCache } from "../../../src/engines/cache.ts";
import {
  EXIT_ENGINE_ERROR,
  EXIT_TRAP,
  isComponent,
  isComponentBinary,
  isWatComponent,
  type RunContext,
  type Runner,
} from "../../../src/engines/engine.ts";
import { WasmtimeEngine } from "../../../src/engines/wasmtime/engine.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { component, prepare, prepareComponents, REPO, tmp, wasm } from "./helpers.ts";

let runner: Runner;
let libPath: string;

beforeAll(async () => {
  libPath = prepare().libPath;
  prepareComponents();
  runner = await wasmtime.load();
}, 600_000);
afterAll(() => runner?.close());

/** stdout/stderr files of one run. */
function io() {
  const d = tmp("bunwasi-comp-");
  return {
    stdout: { kind: "path" as const, path: join(d, "stdout") },
    stderr: { kind: "path" as const, path: join(d, "stderr") },
    read: (f: "stdout" | "stderr") => readFileSync(join(d, f), "utf8"),
  };
}

async function run(name: string, args: string[], more: Partial<RunContext> = {}) {
  const s = io();
  const r = await runner.run({ modulePath: component(name), args: [name, ...args], env: [], stdout: s.stdout, stderr: s.stderr, ...more });
  return { code: r.code, stats: r.stats, out: s.read("stdout"), err: s.read("stderr") };
}

const watText = (name: string) => new Uint8Array(readFileSync(join(REPO, "test/wasm/components", `${name}.wat`)));

describe("components (WASI preview 2) in the wasmtime engine", () => {
  test("detection: a component binary and component WAT text are taken; a core module is not a component", () => {
    const spec = { ociVersion: "1.0.2", process: { args: ["/c"], cwd: "/" }, root: { path: "rootfs" } };
    const head = (p: string) => new Uint8Array(readFileSync(p)).subarray(0, 4096);
    const ep = (h: Uint8Array) => ({ path: "/c", host: "/c", head: h });
    const bin = head(component("wasi-demo-app"));
    const text = watText("busy");
    expect(isComponentBinary(bin)).toBe(true);
    expect(isComponentBinary(head(wasm("wasi-demo-app")))).toBe(false);
    expect(isWatComponent(text)).toBe(true);
    expect(isWatComponent(new TextEncoder().encode("(module)"))).toBe(false);
    expect(isComponent(bin) && isComponent(text) && !isComponent(head(wasm("trap")))).toBe(true);
    expect(wasmtime.canHandle(ep(bin), spec)).toBe(true);
    expect(wasmtime.canHandle(ep(text), spec)).toBe(true);
  });

  // The adapter's components export wasi:cli/run@0.2.12; the engine asks for @0.2.0 and
  // wasmtime's semver-compatible lookup finds it.
  test("echo: args reach wasi:cli/run, output on the stdout file", async () => {
    const r = await run("wasi-demo-app", ["echo", "hello", "component ✓"]);
    expect(r).toMatchObject({ code: 0, out: "hello component ✓\nexiting\n", err: "" });
  });

  test("args and env round-trip exactly", async () => {
    const r = await run("env", ["two words", "ünïcödé ✓", ""], { env: ["A=1", "SPACED=a b  c", "EMPTY=", "EQ=a=b"] });
    expect(r.code).toBe(0);
    expect(r.out).toBe("arg[0]=env\narg[1]=two words\narg[2]=ünïcödé ✓\narg[3]=\nenv:A=1\nenv:SPACED=a b  c\nenv:EMPTY=\nenv:EQ=a=b\n");
  });

  test("exit codes: return 0 → 0; exit-with-code(3) → 3; the preview 1 adapter's exit(3) → 1", async () => {
    expect((await run("wasi-demo-app", ["exit", "0"])).code).toBe(0);
    expect((await run("exit-code", [])).code).toBe(3);
    // The adapter's proc_exit can only say ok/err through wasi:cli/exit.exit(result).
    expect((await run("wasi-demo-app", ["exit", "3"])).code).toBe(1);
  });

  test(`trap → ${EXIT_TRAP} and the trap message on stderr`, async () => {
    const r = await run("trap", []);
    expect(r.code).toBe(EXIT_TRAP);
    expect(r.err).toContain("wasm `unreachable` instruction executed");
  });

  test("the root is preopened as /: a write lands in the host dir, nothing outside is reachable", async () => {
    const root = tmp("bunwasi-comp-root-");
    mkdirSync(join(root, "tmp"));
    const w = await run("wasi-demo-app", ["write", "/tmp/out.txt", "written ✓"], { rootDir: root });
    expect(w.code).toBe(0);
    expect(readFileSync(join(root, "tmp/out.txt"), "utf8")).toBe("written ✓");
    writeFileSync(join(root, "inside.txt"), "inside line\n");
    const e = await run("escape", ["/inside.txt", "/../etc/passwd", "/etc/passwd"], { rootDir: root });
    expect(e.out).toBe(
      "/inside.txt: ok inside line\n/../etc/passwd: error Operation not permitted\n/etc/passwd: error No such file or directory\n",
    );
  });

  test("read-only root refuses writes", async () => {
    const root = tmp("bunwasi-comp-ro-");
    const r = await run("wasi-demo-app", ["write", "/x.txt", "no"], { rootDir: root, rootReadOnly: true });
    expect(r.code).not.toBe(0);
    expect(readdirSync(root)).toEqual([]);
  });

  test("stdin from a file is copied to stdout", async () => {
    const d = tmp("bunwasi-comp-in-");
    const input = `line one\nzwei ✓\n${"x".repeat(100_000)}\nlast`;
    writeFileSync(join(d, "in"), input);
    const r = await run("cat", [], { stdin: { kind: "path", path: join(d, "in") } });
    expect(r.code).toBe(0);
    expect(r.out).toBe(input);
  });

  test("a busy component (no host calls) is killed through the epoch: 128+signal", async () => {
    const ac = new AbortController();
    const s = io();
    const running = runner.run({
      modulePath: component("busy"),
      args: ["busy"],
      env: [],
      stdout: s.stdout,
      stderr: s.stderr,
      signal: ac.signal,
    });
    // Abort once it is spinning (it says so on stdout first), so that the epoch interrupt,
    // not the pre-run check, stops it. Looks are bounded only to turn a hang into a failure.
    const out = () => (existsSync(s.stdout.path) ? s.read("stdout") : "");
    for (let i = 0; i < 6000 && out() !== "spinning\n"; i++) await Bun.sleep(10);
    expect(out()).toBe("spinning\n");
    ac.abort("SIGTERM");
    const killed = await running;
    expect(killed.code).toBe(128 + 15);
    expect(killed.stats.runMs).toBeGreaterThan(0); // it was inside wasi:cli/run when killed
    const already = new AbortController();
    already.abort(2);
    expect((await run("busy", [], { signal: already.signal })).code).toBe(130);
  });

  test("a daemon component asleep in a host call is killed too: 128+signal, its output kept", async () => {
    const ac = new AbortController();
    const s = io();
    const running = runner.run({ modulePath: component("wasi-demo-app"), args: ["demo"], env: [], stdout: s.stdout, signal: ac.signal });
    // Kill once the first verse is out (it then sleeps a second between verses).
    const out = () => (existsSync(s.stdout.path) ? s.read("stdout") : "");
    for (let i = 0; i < 200 && !out().includes("forever just because"); i++) await Bun.sleep(25);
    ac.abort(9);
    expect((await running).code).toBe(137);
    expect(s.read("stdout")).toStartWith("This is a song that never ends.\nYes, it goes on and on my friends.\n");
  });

  test("#export calls that function with no arguments", async () => {
    expect((await run("funcs", [])).code).toBe(1); // wasi:cli/run returns err
    expect((await run("funcs", [], { entry: "other" })).code).toBe(7);
    expect((await run("funcs", [], { entry: "ret" })).code).toBe(0);
    const missing = await run("funcs", [], { entry: "nope" });
    expect(missing.code).toBe(EXIT_ENGINE_ERROR);
    expect(missing.err).toContain('component has no exported function "nope"');
    const params = await run("funcs", [], { entry: "add" });
    expect(params.code).toBe(EXIT_ENGINE_ERROR);
    expect(params.err).toContain('export "add" takes 2 parameter(s)');
  });

  test(`an import nobody defines → ${EXIT_ENGINE_ERROR} naming it`, async () => {
    const r = await run("missing-import", []);
    expect(r.code).toBe(EXIT_ENGINE_ERROR);
    expect(r.out).toBe("");
    expect(r.err).toContain("link: component imports instance `example:missing/thing@1.0.0`, but a matching implementation was not found");
  });

  test("a component without wasi:cli/run is refused as a command; #export still calls its functions", async () => {
    const s = io();
    const noRun = new TextEncoder().encode(
      '(component (core module $m (func (export "f"))) (core instance $i (instantiate $m)) (func (export "f") (canon lift (core func $i "f"))))',
    );
    const r = await runner.run({ module: noRun, args: ["x"], env: [], stderr: s.stderr });
    expect(r.code).toBe(EXIT_ENGINE_ERROR);
    expect(s.read("stderr")).toContain('component has no "wasi:cli/run@0.2.0" export');
    expect((await runner.run({ module: noRun, args: ["x"], env: [], entry: "f" })).code).toBe(0);
  });

  test("memory limit refuses growth beyond it", async () => {
    expect((await run("grow", [])).code).toBe(0);
    expect((await run("grow", [], { memoryLimitBytes: 16 * 1024 * 1024 })).code).toBe(12);
  });

  test("component WAT text runs as given", async () => {
    const r = await runner.run({ module: watText("exit-code"), args: ["w"], env: [] });
    expect(r.code).toBe(3);
  });

  test("an invalid component → engine error and a message", async () => {
    const s = io();
    const bad = new Uint8Array([0, 0x61, 0x73, 0x6d, 0x0d, 0, 1, 0, 0xff]);
    expect((await runner.run({ module: bad, args: ["b"], env: [], stderr: s.stderr })).code).toBe(EXIT_ENGINE_ERROR);
    expect(s.read("stderr")).toContain("compile");
  });
});

describe("components and the compile cache", () => {
  test("precompile (wasmtime_component_serialize) → run from the artifact without compiling", async () => {
    const engine = new WasmtimeEngine({ libPath });
    try {
      const artifact = engine.precompile(new Uint8Array(readFileSync(component("wasi-demo-app"))));
      expect(artifact[0]).toBe(0x7f); // ELF
      const s = io();
      const r = await engine.execute({
        module: artifact,
        precompiled: true,
        precompiledComponent: true,
        args: ["d", "echo", "from", "artifact"],
        env: [],
        stdout: s.stdout,
      });
      expect(r.code).toBe(0);
      expect(s.read("stdout")).toBe("from artifact\nexiting\n");
      expect(r.stats.compileMs).toBeUndefined();
      expect(r.stats.deserializeMs).toBeDefined();
    } finally {
      engine.close();
    }
  });

  test("the Engine's compiler compiles a component off-thread into an artifact the cache serves", async () => {
    const source = new Uint8Array(readFileSync(component("env")));
    const artifact = await wasmtime.compiler?.compile(source);
    expect(artifact?.[0]).toBe(0x7f);
    const dir = tmp("bunwasi-comp-cache-");
    const key = (await wasmtime.compiler?.cacheKey(source)) as string;
    const cache = new CompileCache({ dir });
    await cache.put(key, artifact as Uint8Array);
    // From the cache, checked (the daemon's way), and given as a checked file (the executor's).
    const cached = new WasmtimeEngine({ libPath, cacheDir: dir });
    const plain = new WasmtimeEngine({ libPath });
    try {
      for (const [engine, extra] of [
        [cached, {}],
        [plain, { compiled: cache.fileOf(key) }],
      ] as const) {
        const s = io();
        const r = await engine.execute({ module: source, args: ["env", "hit"], env: [], stdout: s.stdout, ...extra });
        expect(r.code).toBe(0);
        expect(s.read("stdout")).toBe("arg[0]=env\narg[1]=hit\n");
        expect(r.stats.cacheHit).toBe(true);
        expect(r.stats.compileMs).toBeUndefined();
      }
    } finally {
      cached.close();
      plain.close();
    }
  });

  test("miss then hit; a corrupt entry falls back to compiling", async () => {
    const dir = tmp("bunwasi-comp-cache-");
    const cached = new WasmtimeEngine({ libPath, cacheDir: dir });
    const go = async (word: string) => {
      const s = io();
      const r = await cached.execute({ modulePath: component("wasi-demo-app"), args: ["d", "echo", word], env: [], stdout: s.stdout });
      return { ...r, out: s.read("stdout") };
    };
    try {
      const miss = await go("miss");
      expect(miss).toMatchObject({ code: 0, out: "miss\nexiting\n" });
      expect(miss.stats.cacheHit).toBe(false);
      // The artifact is written when the worker posts it, before the run's exit message.
      const entries = readdirSync(dir).filter((n) => n.endsWith(".cwasm"));
      expect(entries).toHaveLength(1);
      const hit = await go("hit");
      expect(hit).toMatchObject({ code: 0, out: "hit\nexiting\n" });
      expect(hit.stats.cacheHit).toBe(true);
      expect(hit.stats.compileMs).toBeUndefined();
      writeFileSync(join(dir, entries[0] as string), "garbage");
      const again = await go("again");
      expect(again).toMatchObject({ code: 0, out: "again\nexiting\n" });
      expect(again.stats.compileMs).toBeDefined();
    } finally {
      cached.close();
    }
  });
});
