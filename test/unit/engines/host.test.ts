// Host functions through the Engine interface: withHostFunctions(wasmtime, …) links the
// functions of a host module (imported on the run thread) into the guest; values go both
// ways (i32, i64), the guest's memory is readable, a throwing function traps the guest, and
// the plain engine refuses the same module at link time (125).
import { beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type Engine, EXIT_ENGINE_ERROR, EXIT_TRAP, type Runner } from "../../../src/engines/engine.ts";
import { withHostFunctions } from "../../../src/engines/host-functions.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { prepare, tmp } from "./helpers.ts";

const wat = (body: string) =>
  new TextEncoder().encode(`(module
  (import "bunwasi:test/host" "add" (func $add (param i32 i32) (result i32)))
  (import "bunwasi:test/host" "wide" (func $wide (param i64) (result i64)))
  (import "bunwasi:test/host" "isOk" (func $isOk (param i32 i32) (result i32)))
  (import "bunwasi:test/host" "fail" (func $fail))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "ok")
  (func (export "_start") ${body}))`);

let custom: Engine;
let withHosts: Runner;
let plain: Runner;

beforeAll(async () => {
  prepare();
  custom = withHostFunctions(wasmtime, { name: "custom", modules: [new URL("./fixtures/host-fns.ts", import.meta.url)] });
  withHosts = await custom.load();
  plain = await wasmtime.load();
});

function run(r: Runner, body: string) {
  const d = tmp();
  const stderr = join(d, "stderr");
  return r
    .run({ module: wat(body), args: ["t"], env: [], stderr: { kind: "path", path: stderr } })
    .then((res) => ({ code: res.code, err: readFileSync(stderr, "utf8") }));
}

describe("host functions", () => {
  test("the wrapper keeps the engine's compiler and executor files, under its own name", () => {
    expect(custom.name).toBe("custom");
    expect(custom.compiler).toBe(wasmtime.compiler as NonNullable<Engine["compiler"]>);
    expect(custom.executor()).toEqual(wasmtime.executor());
  });
  test("an i32 result comes back to the guest", async () => {
    expect(await run(withHosts, "(call $exit (call $add (i32.const 40) (i32.const 2)))")).toEqual({ code: 42, err: "" });
  });
  test("i64 crosses as bigint", async () => {
    expect(await run(withHosts, "(call $exit (i32.wrap_i64 (call $wide (i64.const 21))))")).toEqual({ code: 42, err: "" });
  });
  test("the guest's memory is readable", async () => {
    expect(await run(withHosts, "(call $exit (call $isOk (i32.const 8) (i32.const 2)))")).toEqual({ code: 0, err: "" });
    expect(await run(withHosts, "(call $exit (call $isOk (i32.const 9) (i32.const 2)))")).toEqual({ code: 1, err: "" });
  });
  test("a host function that throws traps the guest (134) with its message", async () => {
    const r = await run(withHosts, "(call $fail)");
    expect(r.code).toBe(EXIT_TRAP);
    expect(r.err).toContain("bunwasi:test/host.fail: boom");
  });
  test("without them the module does not link: 125 before it runs", async () => {
    const r = await run(plain, "(call $exit (i32.const 0))");
    expect(r.code).toBe(EXIT_ENGINE_ERROR);
    expect(r.err).toMatch(/^link: unknown import: `bunwasi:test\/host::\w+` has not been defined/);
  });
});
