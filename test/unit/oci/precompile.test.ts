// The compile cache filled through the Engine's Compiler: a miss compiles once, a hit does
// not compile again, a bad module is only logged, and the wasmtime compiler's artifact is
// what its executor-side Runner takes from the cache (a hit there, no compile).
import { beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
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
    await precompile(fake, prepared(mod), cache, (m) => logs.push(m));
    await precompile(fake, prepared(mod), cache, (m) => logs.push(m));
    expect(compiled).toEqual([8]);
    expect(readdirSync(cache)).toEqual(["k8.cwasm"]);
    expect(new Uint8Array(readFileSync(join(cache, "k8.cwasm")))).toEqual(new Uint8Array([1, 2, 3]));
    expect(logs).toEqual([]);
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
    expect(readdirSync(cache)).toEqual(["shared.cwasm"]);
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
    await precompile(wasmtime, prepared(bad), join(d, "cache"), (m) => logs.push(m));
    expect(logs.length).toBe(1);
    expect(logs[0]).toStartWith("precompile /m.wasm: ");
  });

  test("wasmtime: the cached artifact is a hit for the Runner", async () => {
    const d = tmp();
    const cache = join(d, "cache");
    await precompile(wasmtime, prepared(wasm("wasi-demo-app")), cache, () => {});
    const runner = await wasmtime.load({ cacheDir: cache });
    const out = join(d, "out");
    const r = await runner.run({
      modulePath: wasm("wasi-demo-app"),
      args: ["x", "echo", "hi"],
      env: [],
      stdout: { kind: "path", path: out },
    });
    runner.close();
    expect(r.code).toBe(0);
    expect(readFileSync(out, "utf8")).toBe("hi\nexiting\n");
    expect(r.stats.cacheHit).toBe(true);
    expect(r.stats.compileMs).toBeUndefined();
  });
});
