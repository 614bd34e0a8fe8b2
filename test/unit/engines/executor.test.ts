// The executor reaches the engine only through Engine.load() and Runner.run(): its flags
// become LoadOptions (engine dir, engine options, cache, kill grace) and a RunContext
// (module, entry, argv, memory limit, the container's root and stdio), and the run's code
// is its exit code; a bad command line or a failing load is 125.
import { describe, expect, test } from "bun:test";
import type { Engine, LoadOptions, RunContext } from "../../../src/engines/engine.ts";
import { parseExecutorArgs, runExecutor } from "../../../src/engines/executor.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";

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

describe("executor", () => {
  test("flags parse; everything after -- is the module's argv", () => {
    const o = parseExecutorArgs([
      "executor",
      "--module",
      "/app.wasm",
      "--entry",
      "run",
      "--engine-dir",
      "/.bunwasi",
      "--engine-opt",
      "a=1",
      "--engine-opt",
      "b=x=y",
      "--memory-limit",
      "4096",
      "--",
      "app.wasm#run",
      "--not-ours",
    ]);
    expect(o).toMatchObject({
      module: "/app.wasm",
      entry: "run",
      engineDir: "/.bunwasi",
      engineOptions: { a: "1", b: "x=y" },
      memoryLimitBytes: 4096,
      args: ["app.wasm#run", "--not-ours"],
    });
    expect(() => parseExecutorArgs(["--engine-opt", "novalue", "--module", "/m"])).toThrow(/KEY=VALUE/);
    expect(() => parseExecutorArgs(["--lib", "/x.so", "--module", "/m"])).toThrow(/unknown flag --lib/);
  });

  test("runs through Engine.load and Runner.run; the run's code is the exit code", async () => {
    const { engine, seen } = recording(7);
    const argv = ["--module", "/m.wasm", "--entry", "go", "--engine-dir", "/d", "--engine-opt", "k=v", "--cache", "/c", "--", "m", "x"];
    expect(await runExecutor(argv, engine)).toBe(7);
    expect(seen.load).toMatchObject({ dir: "/d", options: { k: "v" }, cacheDir: "/c" });
    expect(seen.run).toMatchObject({
      modulePath: "/m.wasm",
      entry: "go",
      args: ["m", "x"],
      rootDir: "/",
      stdin: { kind: "inherit" },
      stdout: { kind: "inherit" },
      stderr: { kind: "inherit" },
    });
    expect(seen.run?.signal).toBeInstanceOf(AbortSignal);
  });

  test("a bad command line or an engine that fails to load: 125", async () => {
    const { engine } = recording(0);
    expect(await runExecutor(["--entry", "x"], engine)).toBe(125);
    const broken: Engine = {
      ...engine,
      load: async () => {
        throw new Error("no library");
      },
    };
    expect(await runExecutor(["--module", "/m.wasm"], broken)).toBe(125);
  });
});
