// The compile cache filled through the Engine's Compiler: a miss compiles once, a hit does
// not compile again, an entry that does not check is compiled again (and said so), a bad
// module is only logged, and the wasmtime compiler's artifact is what its Runner maps, given
// as the checked file (the executor's) or checked in the cache (the daemon's): no compile.
import { beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Engine } from "../../../src/engines/engine.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import type { Prepared } from "../../../src/oci/bundle.ts";
import { precompile } from "../../../src/oci/precompile.ts";
import { prepare, tmp, wasm } from "../engines/helpers.ts";

const spec = { ociVersion: "1.0.2", process: { args: ["/m.wasm"], cwd: "/" }, root: { path: "rootfs" } };
const prepared = (moduleHost: string): Prepared => ({ runtimeBundle: "/b", kind: "wasm", module: "/m.wasm", moduleHost, spec });

beforeAll(() => {
  prepare();
});

describe("precompile", () => {
  test("compiles a miss once, through the engine's compiler", async () => {
    const compiled: number[] = [];
    const fake: Engine = {
      ...wasmtime,
      compiler: {
        cacheKey: async (s) => `k${s.length}`,
        compile: async (s) => {
          compiled.push(s.length);
          return new Uint8Array([1, 2, 3]);
        },
      },
    };
    const d = tmp();
    const mod = join(d, "m.wasm");
    writeFileSync(mod, new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
    const cache = join(d, "cache");
    const logs: string[] = [];
    const file = join(cache, "k8.cwasm");
    expect(await precompile(fake, prepared(mod), cache, (m) => logs.push(m))).toBe(file);
    expect(await precompile(fake, prepared(mod), cache, (m) => logs.push(m))).toBe(file);
    expect(compiled).toEqual([8]);
    expect(readdirSync(cache).sort()).toEqual(["k8.cwasm", "k8.mac"]);
    expect(new Uint8Array(readFileSync(file))).toEqual(new Uint8Array([1, 2, 3]));
    expect(logs).toEqual([]);
    // Changed under us: compiled again, and said so.
    chmodSync(file, 0o666);
    expect(await precompile(fake, prepared(mod), cache, (m) => logs.push(m))).toBe(file);
    expect(compiled).toEqual([8, 8]);
    expect(logs).toEqual(["compile cache: k8.cwasm not used: mode 666; compiled again"]);
  });

  test("Creates of one module side by side share one compile and one write", async () => {
    let compiles = 0;
    const fake: Engine = {
      ...wasmtime,
      compiler: {
        cacheKey: async () => "shared",
        compile: async () => {
          compiles++;
          await Bun.sleep(20);
          return new Uint8Array([4, 5, 6]);
        },
      },
    };
    const d = tmp();
    const mod = join(d, "m.wasm");
    writeFileSync(mod, new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
    const cache = join(d, "cache");
    const logs: string[] = [];
    await Promise.all(Array.from({ length: 5 }, () => precompile(fake, prepared(mod), cache, (m) => logs.push(m))));
    expect(compiles).toBe(1);
    expect(readdirSync(cache).sort()).toEqual(["shared.cwasm", "shared.mac"]);
    expect(logs).toEqual([]);
  });

  test("native containers and engines without a compiler are left alone", async () => {
    const d = tmp();
    const noCompiler: Engine = { ...wasmtime, compiler: undefined };
    await precompile(noCompiler, prepared(wasm("busy")), join(d, "c1"), () => {});
    await precompile(wasmtime, { ...prepared(wasm("busy")), kind: "native" }, join(d, "c2"), () => {});
    expect(readdirSync(d)).toEqual([]);
  });

  test("a module that does not compile is logged, not thrown", async () => {
    const d = tmp();
    const bad = join(d, "bad.wasm");
    writeFileSync(bad, new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0xff]));
    const logs: string[] = [];
    expect(await precompile(wasmtime, prepared(bad), join(d, "cache"), (m) => logs.push(m))).toBeUndefined();
    expect(logs.length).toBe(1);
    expect(logs[0]).toStartWith("precompile /m.wasm: ");
  });

  test("wasmtime: the cached artifact is what the Runner maps: given checked (the executor), or checked in the cache (the daemon)", async () => {
    const d = tmp();
    const cache = join(d, "cache");
    const file = await precompile(wasmtime, prepared(wasm("wasi-demo-app")), cache, () => {});
    expect(file).toBeDefined();
    for (const [how, load, extra] of [
      ["given", {}, { compiled: file as string }],
      ["from the cache", { cacheDir: cache }, {}],
    ] as const) {
      const runner = await wasmtime.load(load);
      const out = join(d, `out-${how}`);
      const r = await runner.run({
        modulePath: wasm("wasi-demo-app"),
        args: ["x", "echo", "hi"],
        env: [],
        stdout: { kind: "path", path: out },
        ...extra,
      });
      runner.close();
      expect({ how, code: r.code, out: readFileSync(out, "utf8"), hit: r.stats.cacheHit, compileMs: r.stats.compileMs }).toEqual({
        how,
        code: 0,
        out: "hi\nexiting\n",
        hit: true,
        compileMs: undefined,
      });
    }
  });

  test("wasmtime from the cache: an entry that does not check is not mapped; the run compiles and writes it again", async () => {
    const d = tmp();
    const cache = join(d, "cache");
    const file = (await precompile(wasmtime, prepared(wasm("wasi-demo-app")), cache, () => {})) as string;
    // Another module's compile in its place: mapped, it would run that module.
    const other = (await precompile(wasmtime, prepared(wasm("env")), cache, () => {})) as string;
    writeFileSync(file, readFileSync(other));
    const runner = await wasmtime.load({ cacheDir: cache });
    const out = join(d, "out");
    const r = await runner.run({
      modulePath: wasm("wasi-demo-app"),
      args: ["x", "echo", "hi"],
      env: [],
      stdout: { kind: "path", path: out },
    });
    runner.close();
    expect({ code: r.code, out: readFileSync(out, "utf8"), hit: r.stats.cacheHit }).toEqual({ code: 0, out: "hi\nexiting\n", hit: false });
    expect(r.stats.compileMs).toBeGreaterThan(0);
    // Written back, checked: the next Create finds it.
    const logs: string[] = [];
    expect(await precompile(wasmtime, prepared(wasm("wasi-demo-app")), cache, (m) => logs.push(m))).toBe(file);
    expect(logs).toEqual([]);
  });
});
