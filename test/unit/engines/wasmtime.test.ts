import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EXIT_ENGINE_ERROR, EXIT_TRAP } from "../../../src/engines/engine.ts";
import { WasmtimeEngine } from "../../../src/engines/wasmtime/engine.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { prepare, tmp, wasm } from "./helpers.ts";

let engine: WasmtimeEngine;
/** An hour of kill grace: a killed run that resolves really stopped (its give-up timer never fires). */
let patient: WasmtimeEngine;

beforeAll(() => {
  const { libPath } = prepare();
  engine = new WasmtimeEngine({ libPath });
  patient = new WasmtimeEngine({ libPath, killGraceMs: 3_600_000 });
});
afterAll(() => patient.close());

// Says "spinning" on stdout, then loops with no host call: only an epoch trap stops it.
const SPIN = new TextEncoder().encode(`(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "spinning\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 9))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))
    (loop $l (br $l))))`);

/** Liveness only (fail instead of hang), not a bound on how fast anything is. */
async function waitFor(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(10);
  }
}

function io() {
  const d = tmp();
  return {
    dir: d,
    out: join(d, "stdout"),
    err: join(d, "stderr"),
    stdout: { kind: "path" as const, path: join(d, "stdout") },
    stderr: { kind: "path" as const, path: join(d, "stderr") },
    read: (f: "stdout" | "stderr") => readFileSync(join(d, f), "utf8"),
  };
}

/** The SPIN module wrote its marker to this io()'s stdout. */
function spinning(s: ReturnType<typeof io>): boolean {
  return existsSync(s.out) && s.read("stdout") === "spinning\n";
}

describe("wasmtime engine", () => {
  test("canHandle: wasm magic and WAT, not other bytes", () => {
    const spec = { ociVersion: "1.0.2", process: { args: ["/m"], cwd: "/" }, root: { path: "rootfs" } };
    const ep = (head: Uint8Array) => ({ path: "/m", host: "/m", head });
    expect(wasmtime.canHandle(ep(readFileSync(wasm("wasi-demo-app")).subarray(0, 4096)), spec)).toBe(true);
    expect(wasmtime.canHandle(ep(new TextEncoder().encode(";; text\n(module)")), spec)).toBe(true);
    expect(wasmtime.canHandle(ep(new TextEncoder().encode("#!/bin/sh\n")), spec)).toBe(false);
    expect(wasmtime.canHandle(ep(new Uint8Array([0x7f, 0x45, 0x4c, 0x46])), spec)).toBe(false);
  });

  test("echo hello arrives on a stdout file", async () => {
    const s = io();
    const code = await engine.run({
      modulePath: wasm("wasi-demo-app"),
      args: ["wasi-demo-app.wasm", "echo", "hello"],
      env: [],
      stdout: s.stdout,
      stderr: s.stderr,
    });
    expect(code).toBe(0);
    expect(s.read("stdout")).toBe("hello\nexiting\n");
    expect(s.read("stderr")).toBe("");
  });

  for (const n of [0, 3, 255]) {
    test(`proc_exit(${n}) → exit code ${n}`, async () => {
      const code = await engine.run({ modulePath: wasm("wasi-demo-app"), args: ["demo", "exit", String(n)], env: [] });
      expect(code).toBe(n);
    });
  }

  test(`trap → ${EXIT_TRAP} and the trap message on stderr`, async () => {
    const s = io();
    const code = await engine.run({ modulePath: wasm("trap"), args: ["trap"], env: [], stdout: s.stdout, stderr: s.stderr });
    expect(code).toBe(EXIT_TRAP);
    expect(s.read("stderr")).toContain("unreachable");
  });

  test("args and env with spaces and unicode", async () => {
    const s = io();
    const code = await engine.run({
      modulePath: wasm("env"),
      args: ["env.wasm", "two words", "ünïcödé ✓", ""],
      env: ["A=1", "SPACED=a b  c", "UNI=日本語", "EMPTY="],
      stdout: s.stdout,
    });
    expect(code).toBe(0);
    expect(s.read("stdout")).toBe(
      "arg[0]=env.wasm\narg[1]=two words\narg[2]=ünïcödé ✓\narg[3]=\nenv:A=1\nenv:SPACED=a b  c\nenv:UNI=日本語\nenv:EMPTY=\n",
    );
  });

  test("env as a record", async () => {
    const s = io();
    await engine.run({ modulePath: wasm("env"), args: ["e"], env: { K: "v" }, stdout: s.stdout });
    expect(s.read("stdout")).toBe("arg[0]=e\nenv:K=v\n");
  });

  test("preopened root: writes land in the host dir, files outside are invisible", async () => {
    const root = tmp("bunwasi-root-");
    writeFileSync(join(root, "inside.txt"), "inside line\n");
    let code = await engine.run({
      modulePath: wasm("wasi-demo-app"),
      args: ["demo", "write", "/hello.txt", "written by wasm"],
      env: [],
      rootDir: root,
      stdout: io().stdout,
    });
    expect(code).toBe(0);
    expect(readFileSync(join(root, "hello.txt"), "utf8")).toBe("written by wasm");

    const s = io();
    code = await engine.run({ modulePath: wasm("escape"), args: ["escape"], env: [], rootDir: root, stdout: s.stdout });
    expect(code).toBe(0);
    const lines = s.read("stdout").trim().split("\n");
    expect(lines[0]).toMatch(/^\/etc\/passwd: error /);
    expect(lines[1]).toMatch(/^\/\.\.\/etc\/passwd: error /);
    expect(lines[2]).toMatch(/^\.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd: error /);
    expect(lines[3]).toMatch(/^\/proc\/self\/environ: error /);
    expect(lines[4]).toBe("/inside.txt: ok inside line");
    expect(s.read("stdout")).not.toContain("root:");
  });

  test("read-only root refuses writes", async () => {
    const root = tmp("bunwasi-root-");
    const s = io();
    const code = await engine.run({
      modulePath: wasm("wasi-demo-app"),
      args: ["demo", "write", "/x.txt", "nope"],
      env: [],
      rootDir: root,
      rootReadOnly: true,
      stderr: s.stderr,
    });
    expect(code).toBe(1);
    expect(existsSync(join(root, "x.txt"))).toBe(false);
    expect(s.read("stderr")).toContain("open /x.txt");
  });

  test("no rootDir: no filesystem at all", async () => {
    const s = io();
    await engine.run({ modulePath: wasm("escape"), args: ["escape", "/etc/passwd"], env: [], stdout: s.stdout });
    expect(s.read("stdout")).toMatch(/^\/etc\/passwd: error /);
  });

  test("stdin from a file is copied to stdout", async () => {
    const s = io();
    const input = join(s.dir, "in");
    const data = `${"line with ünicode\n".repeat(5000)}end`;
    writeFileSync(input, data);
    const code = await engine.run({
      modulePath: wasm("cat"),
      args: ["cat"],
      env: [],
      stdin: { kind: "path", path: input },
      stdout: s.stdout,
    });
    expect(code).toBe(0);
    expect(s.read("stdout")).toBe(data);
  });

  test("10 MiB of stdout arrives whole", async () => {
    const s = io();
    const code = await engine.run({ modulePath: wasm("bigout"), args: ["bigout", "10"], env: [], stdout: s.stdout });
    expect(code).toBe(0);
    expect(statSync(s.out).size).toBe(10 * 1024 * 1024);
  });

  test("busy loop (no host calls) is interrupted by an epoch bump → 128+signal; another run on the engine goes on", async () => {
    const first = io();
    const second = io();
    const ac = new AbortController();
    const other = new AbortController();
    // a second busy module on the same engine must NOT be stopped by the first one's kill
    let otherDone = false;
    const otherRun = patient.execute({ module: SPIN, args: ["spin"], env: [], stdout: second.stdout, signal: other.signal }).then((r) => {
      otherDone = true;
      return r;
    });
    const run = patient.execute({ module: SPIN, args: ["spin"], env: [], stdout: first.stdout, signal: ac.signal });
    await waitFor("both modules spinning", () => spinning(first) && spinning(second));
    const t0 = performance.now();
    ac.abort("SIGTERM");
    const r = await run;
    console.log(`busy loop: SIGTERM → ${r.code} after ${(performance.now() - t0).toFixed(0)} ms (printed, not asserted)`);
    // An hour of kill grace: run() resolving at all means the module trapped; the run
    // thread's stats say it was inside the entry call (the give-up path reports runMs 0).
    expect(r.code).toBe(128 + 15);
    expect(r.stats.runMs).toBeGreaterThan(0);
    expect(otherDone).toBe(false);
    other.abort(9);
    const o = await otherRun;
    expect(o.code).toBe(137);
    expect(o.stats.runMs).toBeGreaterThan(0);
  });

  test("already-aborted signal stops at once", async () => {
    const ac = new AbortController();
    ac.abort(2);
    expect(await engine.run({ modulePath: wasm("busy"), args: ["busy"], env: [], signal: ac.signal })).toBe(130);
  });

  test("daemon (prints and sleeps) is stopped by a kill while asleep in a host call", async () => {
    const s = io();
    const ac = new AbortController();
    const run = patient.execute({ modulePath: wasm("wasi-demo-app"), args: ["demo"], env: [], stdout: s.stdout, signal: ac.signal });
    await waitFor("the first verse", () => existsSync(s.out) && s.read("stdout").includes("forever just because...\n"));
    ac.abort(15);
    const r = await run;
    // The sleep is woken by the kill (./interruptible.ts), not given up on: an hour of grace.
    expect(r.code).toBe(143);
    expect(r.stats.runMs).toBeGreaterThan(0);
    expect(s.read("stdout")).toStartWith(
      "This is a song that never ends.\nYes, it goes on and on my friends.\nSome people started singing it not knowing what it was,\nSo they'll continue singing it forever just because...\n",
    );
  });

  test("#func entry calls another export", async () => {
    expect(await engine.run({ modulePath: wasm("funcs"), args: ["f"], env: [] })).toBe(1);
    expect(await engine.run({ modulePath: wasm("funcs"), args: ["f"], env: [], entry: "other" })).toBe(7);
    expect(await engine.run({ modulePath: wasm("funcs"), args: ["f"], env: [], entry: "ret" })).toBe(0);
    const s = io();
    expect(await engine.run({ modulePath: wasm("funcs"), args: ["f"], env: [], entry: "nope", stderr: s.stderr })).toBe(EXIT_ENGINE_ERROR);
    expect(s.read("stderr")).toContain('no exported function "nope"');
  });

  test("memory limit refuses growth beyond it", async () => {
    expect(await engine.run({ modulePath: wasm("grow"), args: ["g"], env: [] })).toBe(0);
    expect(await engine.run({ modulePath: wasm("grow"), args: ["g"], env: [], memoryLimitBytes: 16 * 1024 * 1024 })).toBe(12);
  });

  test("WAT text is accepted", async () => {
    const wat = new TextEncoder().encode(
      '(module (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32))) (memory (export "memory") 1) (func (export "_start") (call $e (i32.const 42))))',
    );
    expect(await engine.run({ module: wat, args: ["w"], env: [] })).toBe(42);
  });

  test("invalid module → engine error code and a message", async () => {
    const s = io();
    const bad = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0xff]);
    expect(await engine.run({ module: bad, args: ["b"], env: [], stderr: s.stderr })).toBe(EXIT_ENGINE_ERROR);
    expect(s.read("stderr")).toContain("compile");
    expect(await engine.run({ module: new TextEncoder().encode("hello"), args: ["b"], env: [], stderr: s.stderr })).toBe(EXIT_ENGINE_ERROR);
  });

  test("precompile → run from serialized bytes skips compilation", async () => {
    const src = new Uint8Array(readFileSync(wasm("wasi-demo-app")));
    const t0 = performance.now();
    const artifact = engine.precompile(src);
    const precompileMs = performance.now() - t0; // printed, not asserted
    expect(artifact[0]).toBe(0x7f); // ELF
    const s = io();
    const code = await engine.run({
      module: artifact,
      precompiled: true,
      args: ["d", "echo", "from", "artifact"],
      env: [],
      stdout: s.stdout,
    });
    expect(code).toBe(0);
    expect(s.read("stdout")).toBe("from artifact\nexiting\n");
    const st = engine.lastStats;
    expect(st?.compileMs).toBeUndefined();
    expect(st?.deserializeMs).toBeDefined();
    // compile from source for comparison: that run compiles and deserializes nothing
    expect(await engine.run({ module: src, args: ["d", "echo", "x"], env: [], stdout: io().stdout })).toBe(0);
    expect(engine.lastStats?.compileMs).toBeDefined();
    expect(engine.lastStats?.deserializeMs).toBeUndefined();
    const compileMs = engine.lastStats?.compileMs ?? 0;
    console.log(
      `demo app: precompile ${precompileMs.toFixed(1)} ms, compile-in-run ${compileMs.toFixed(1)} ms, deserialize ${st?.deserializeMs?.toFixed(2)} ms, artifact ${artifact.length} B`,
    );
  });

  test("compile cache: miss then hit; concurrent cold starts; corrupt entry recovers", async () => {
    const dir = tmp("bunwasi-cache-");
    const cached = new WasmtimeEngine({ libPath: engine.libPath, cacheDir: dir });
    const run = (word: string) => {
      const s = io();
      return cached
        .run({ modulePath: wasm("wasi-demo-app"), args: ["d", "echo", word], env: [], stdout: s.stdout })
        .then((c) => [c, s.read("stdout"), cached.lastStats] as const);
    };
    // concurrent cold starts
    const results = await Promise.all(["a", "b", "c", "d"].map(run));
    for (const [c] of results) expect(c).toBe(0);
    expect(results.map(([, o]) => o).sort()).toEqual(["a\nexiting\n", "b\nexiting\n", "c\nexiting\n", "d\nexiting\n"]);
    await Bun.sleep(50);
    const entries = readdirSync(dir);
    expect(entries.filter((n) => n.endsWith(".cwasm"))).toHaveLength(1);
    expect(entries.filter((n) => n.includes(".tmp-"))).toHaveLength(0);
    // hit
    const [c2, out2, st2] = await run("hit");
    expect(c2).toBe(0);
    expect(out2).toBe("hit\nexiting\n");
    expect(st2?.cacheHit).toBe(true);
    expect(st2?.compileMs).toBeUndefined();
    // corrupt the entry: falls back to compiling and rewrites it
    const entry = join(dir, entries.find((n) => n.endsWith(".cwasm")) as string);
    writeFileSync(entry, "garbage");
    const [c3, out3, st3] = await run("again");
    expect(c3).toBe(0);
    expect(out3).toBe("again\nexiting\n");
    expect(st3?.compileMs).toBeDefined();
    await Bun.sleep(50);
    expect(statSync(entry).size).toBeGreaterThan(1000);
    cached.close();
  });
});
