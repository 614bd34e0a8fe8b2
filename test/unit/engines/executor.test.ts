// The executor reaches the engine only through Engine.load() and Runner.run(): its flags
// become LoadOptions (engine dir, engine options, cache, kill grace), its RunPlan file a
// RunContext (module, entry, argv, env, cwd, memory limit; the view's root from --root-dir;
// stdio inherited), and the run's code is its exit code; a bad command line or plan, or a
// failing load, is 125.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Engine, LoadOptions, RunContext } from "../../../src/engines/engine.ts";
import { parseExecutorArgs, runExecutor } from "../../../src/engines/executor.ts";
import { parseRunPlan } from "../../../src/engines/run-plan.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { tmp, writePlan } from "./helpers.ts";

/** An engine that records what the executor asks of it and "runs" with exit code `code`. */
function recording(code: number) {
  const seen: { load?: LoadOptions; run?: RunContext } = {};
  const engine: Engine = {
    ...wasmtime,
    name: "recording",
    load: async (opts) => {
      seen.load = opts;
      return {
        run: async (ctx) => {
          seen.run = ctx;
          return { code, stats: { runMs: 1 } };
        },
        close: () => {},
      };
    },
  };
  return { engine, seen };
}

/** Runs `f` with process.stderr's writes going to the file `path` (what the executor says). */
async function withStderr<T>(path: string, f: () => Promise<T>): Promise<T> {
  const write = process.stderr.write.bind(process.stderr);
  let text = "";
  process.stderr.write = ((chunk: string | Uint8Array) => {
    text += typeof chunk === "string" ? chunk : new TextDecoder().decode(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    return await f();
  } finally {
    process.stderr.write = write;
    writeFileSync(path, text);
  }
}

describe("executor", () => {
  const dir = tmp("bunwasi-executor-");
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("flags parse; there is no argv of the module on the command line", () => {
    const o = parseExecutorArgs([
      "executor",
      "--plan",
      "/.bunwasi-run/plan.json",
      "--engine-dir",
      "/.bunwasi",
      "--engine-opt",
      "a=1",
      "--engine-opt",
      "b=x=y",
      "--root-dir",
      "/dev/.bunwasi-root",
      "--kill-grace-ms",
      "50",
    ]);
    expect(o).toEqual({
      plan: "/.bunwasi-run/plan.json",
      engineDir: "/.bunwasi",
      engineOptions: { a: "1", b: "x=y" },
      rootDir: "/dev/.bunwasi-root",
      killGraceMs: 50,
    });
    expect(() => parseExecutorArgs(["--engine-opt", "novalue", "--plan", "/p"])).toThrow(/KEY=VALUE/);
    expect(() => parseExecutorArgs(["--lib", "/x.so", "--plan", "/p"])).toThrow("executor: unknown argument --lib");
    // What the module runs comes from the plan only: the old flags and a trailing argv are refused.
    expect(() => parseExecutorArgs(["--plan", "/p", "--module", "/m.wasm"])).toThrow("executor: unknown argument --module");
    expect(() => parseExecutorArgs(["--plan", "/p", "--", "m"])).toThrow("executor: unknown argument --");
    expect(() => parseExecutorArgs(["--engine-dir", "/d"])).toThrow("executor: --plan FILE is required");
    expect(() => parseExecutorArgs(["--plan", "/p", "--kill-grace-ms", "soon"])).toThrow(/wants milliseconds/);
  });

  test("runs the plan through Engine.load and Runner.run; the run's code is the exit code", async () => {
    const { engine, seen } = recording(7);
    const view = join(dir, "view");
    mkdirSync(view, { recursive: true });
    writeFileSync(join(view, "m.wasm"), "(module)");
    let modulePathLink: string | undefined;
    const plan = writePlan(dir, "/m.wasm", {
      module: { host: "/host/rootfs/m.wasm", path: "/m.wasm", entry: "go" },
      args: ["m", "x"],
      env: ["K=V", "LD_PRELOAD=/x.so"],
      cwd: "/srv",
      limits: { memoryBytes: 4096 },
    });
    const argv = ["--plan", plan, "--engine-dir", "/d", "--engine-opt", "k=v", "--compiled", "/run/module.cwasm", "--root-dir", view];
    const loading = engine.load;
    engine.load = async (opts) => {
      const r = await loading(opts);
      return {
        ...r,
        run: (ctx) => {
          // The fd is the executor's while the run lasts.
          modulePathLink = readlinkSync(ctx.modulePath as string);
          return r.run(ctx);
        },
      };
    };
    expect(await runExecutor(argv, engine)).toBe(7);
    // No compile cache in here: the one compiled module the shim checked and bound in.
    expect(seen.load).toMatchObject({ dir: "/d", options: { k: "v" } });
    expect(seen.load).not.toHaveProperty("cacheDir");
    // The module as the container sees it, opened inside the view the shim mounted, read by the run through that fd.
    expect(seen.run?.modulePath).toMatch(/^\/proc\/self\/fd\/\d+$/);
    expect(modulePathLink).toBe(join(view, "m.wasm"));
    expect(seen.run).toMatchObject({
      compiled: "/run/module.cwasm",
      entry: "go",
      args: ["m", "x"],
      // The plan's env, and only it: not this process's.
      env: ["K=V", "LD_PRELOAD=/x.so"],
      cwd: "/srv",
      rootDir: view,
      memoryLimitBytes: 4096,
      stdin: { kind: "inherit" },
      stdout: { kind: "inherit" },
      stderr: { kind: "inherit" },
    });
    expect(seen.run?.signal).toBeInstanceOf(AbortSignal);
  });

  test("a module that is no regular file now (a fifo, a symlink out of the view, too large): 125, saying what it is, and no run", async () => {
    const view = join(dir, "swapped");
    mkdirSync(view, { recursive: true });
    const { engine, seen } = recording(0);
    const plan = writePlan(dir, "/m.wasm", {
      module: { host: "/host/rootfs/m.wasm", path: "/m.wasm" },
      args: ["m"],
      env: [],
      cwd: "/",
      limits: {},
    });
    const cases: [string, () => void, string][] = [
      ["a fifo", () => Bun.spawnSync(["mkfifo", join(view, "m.wasm")]), "/m.wasm: a fifo, not a module file"],
      // Resolved inside the view, where there is no /dev/zero.
      ["a symlink to /dev/zero", () => symlinkSync("/dev/zero", join(view, "m.wasm")), "/m.wasm: no such file"],
      [
        "a sparse file of 1 GiB",
        () => {
          writeFileSync(join(view, "m.wasm"), "");
          truncateSync(join(view, "m.wasm"), 1 << 30);
        },
        "/m.wasm: 1073741824 bytes, more than a module may have",
      ],
    ];
    for (const [, make, says] of cases) {
      rmSync(join(view, "m.wasm"), { force: true });
      make();
      const err = join(dir, "stderr");
      const code = await withStderr(err, () => runExecutor(["--plan", plan, "--root-dir", view], engine));
      expect(code).toBe(125);
      expect(readFileSync(err, "utf8")).toContain(says);
      expect(seen.run).toBeUndefined();
    }
  });

  test("a bad command line, a plan that cannot be read or is wrong, or an engine that fails to load: 125", async () => {
    const { engine } = recording(0);
    expect(await runExecutor(["--engine-dir", "x"], engine)).toBe(125);
    expect(await runExecutor(["--plan", join(dir, "missing.json")], engine)).toBe(125);
    const bad = join(dir, "bad.json");
    writeFileSync(bad, JSON.stringify({ module: { host: "/m" }, args: [] }));
    expect(await runExecutor(["--plan", bad], engine)).toBe(125);
    expect(() => parseRunPlan(readFileSync(bad, "utf8"))).toThrow("plan: module needs host and path");
    const broken: Engine = {
      ...engine,
      load: async () => {
        throw new Error("no library");
      },
    };
    expect(await runExecutor(["--plan", writePlan(dir, "/m.wasm")], broken)).toBe(125);
  });
});
