// src/oci/exec-process.ts without runc: the process of an Exec as the runtime gets it. A module
// exec'd into a wasm container becomes our executor at that container's mount (with the
// container's memory limit and cache), a native program stays as given, and a module cannot
// be exec'd into a native container (it has no executor mount).

import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { withSmallVmEntries } from "../../../src/common/vm-env.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { prepare } from "../../../src/oci/bundle.ts";
import { prepareExecProcess } from "../../../src/oci/exec-process.ts";
import { type ExecutorDir, LOADER_NAME } from "../../../src/oci/executor-dir.ts";
import type { Spec, SpecProcess } from "../../../src/oci/spec.ts";

const base = mkdtempSync(join(tmpdir(), "bunwasi-exec-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

const WASM = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
const ELF = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]);
const fakeExec: ExecutorDir = {
  dir: "/var/lib/bunwasi/exec/abc",
  binaryName: "bunwasi-executor",
  subcommand: [],
  engineOptions: {},
  files: [],
};

let n = 0;
/** A bundle whose own process is `args`, with a module, a tool module and a native shell in its rootfs. */
function bundle(args: string[]): string {
  const b = join(base, `b${n++}`);
  const root = join(b, "rootfs");
  mkdirSync(join(root, "bin"), { recursive: true });
  const spec = {
    ociVersion: "1.0.2",
    process: { args, cwd: "/", env: ["PATH=/bin"], user: { uid: 0, gid: 0 } },
    root: { path: "rootfs" },
    mounts: [{ destination: "/dev", type: "tmpfs", source: "tmpfs" }],
    linux: { resources: { memory: { limit: 32 << 20 } } },
  } as Spec;
  writeFileSync(join(b, "config.json"), JSON.stringify(spec));
  writeFileSync(join(root, "app.wasm"), WASM);
  writeFileSync(join(root, "bin/tool.wasm"), WASM);
  writeFileSync(join(root, "bin/sh"), ELF);
  chmodSync(join(root, "bin/sh"), 0o755);
  return b;
}

const proc = (args: string[]): SpecProcess => ({
  args,
  cwd: "/work",
  env: ["PATH=/bin", "K=V"],
  user: { uid: 7, gid: 7 },
  terminal: false,
});

async function container(args: string[], cacheDir?: string) {
  const b = bundle(args);
  const p = await prepare({ id: `c${n}`, bundle: b, stateDir: join(base, "state"), executorDir: fakeExec, engine: wasmtime, cacheDir });
  return { bundle: b, runtimeBundle: p.runtimeBundle };
}

describe("the process of an exec", () => {
  test("a module exec'd into a wasm container runs through the executor at the container's mount", async () => {
    const c = await container(["/app.wasm"]);
    const r = await prepareExecProcess({ ...c, engine: wasmtime, process: proc(["tool.wasm", "a", "b"]), executorDir: fakeExec });
    expect(r.kind).toBe("wasm");
    expect(r.process.args).toEqual([
      `/.bunwasi/${LOADER_NAME}`,
      "--library-path",
      "/.bunwasi",
      "/.bunwasi/bunwasi-executor",
      "--module",
      "/bin/tool.wasm",
      "--engine-dir",
      "/.bunwasi",
      "--memory-limit",
      String(32 << 20),
      // the module's "/" is the container's view without /proc, /sys and /dev, as the init's
      "--root-dir",
      "/dev/.bunwasi-root",
      "--",
      "tool.wasm",
      "a",
      "b",
    ]);
    // Everything else of the exec's process is kept: its env, cwd, user, terminal flag.
    // (the env gains the executor's JSC options, which the executor hides from the module: src/common/vm-env.ts)
    expect(r.process).toMatchObject({
      cwd: "/work",
      env: withSmallVmEntries(["PATH=/bin", "K=V"]),
      user: { uid: 7, gid: 7 },
      terminal: false,
    });
  });

  test("module#export becomes --entry; the container's compile cache is the exec's too", async () => {
    const c = await container(["/app.wasm"], join(base, "cache"));
    const r = await prepareExecProcess({ ...c, engine: wasmtime, process: proc(["/app.wasm#run"]), executorDir: fakeExec });
    expect(r.process.args).toContain("--entry");
    expect(r.process.args[r.process.args.indexOf("--entry") + 1]).toBe("run");
    expect(r.process.args[r.process.args.indexOf("--cache") + 1]).toBe("/.bunwasi-cache");
  });

  test("a native program exec'd into a wasm container is left as given", async () => {
    const c = await container(["/app.wasm"]);
    const p = proc(["sh", "-c", "echo $$"]);
    expect(await prepareExecProcess({ ...c, engine: wasmtime, process: p, executorDir: fakeExec })).toEqual({ process: p, kind: "native" });
  });

  test("into a native container: native programs run, modules are refused", async () => {
    const c = await container(["/bin/sh"]);
    expect(c.runtimeBundle).toBe(c.bundle);
    const p = proc(["/bin/sh"]);
    expect(await prepareExecProcess({ ...c, engine: wasmtime, process: p, executorDir: fakeExec })).toEqual({ process: p, kind: "native" });
    await expect(prepareExecProcess({ ...c, engine: wasmtime, process: proc(["/app.wasm"]), executorDir: fakeExec })).rejects.toThrow(
      "a wasm module runs only in a container whose own process is one",
    );
  });

  test("an args[0] that is not in the container is refused with the path", async () => {
    const c = await container(["/app.wasm"]);
    await expect(prepareExecProcess({ ...c, engine: wasmtime, process: proc(["/nope.wasm"]), executorDir: fakeExec })).rejects.toThrow(
      "/nope.wasm: no such file in the container's rootfs",
    );
  });

  /** A container of an OCI wasm artifact: its own args[0] is in no rootfs; the module came from the hook. */
  async function artifactContainer(args: string[], cwd = "/") {
    const b = bundle(args);
    const spec = JSON.parse(readFileSync(join(b, "config.json"), "utf8"));
    spec.process.cwd = cwd;
    writeFileSync(join(b, "config.json"), JSON.stringify(spec));
    const id = `art${n}`;
    const p = await prepare({
      id,
      bundle: b,
      stateDir: join(base, "state"),
      executorDir: fakeExec,
      engine: wasmtime,
      artifact: async () => ({ bytes: WASM }),
    });
    return { bundle: b, runtimeBundle: p.runtimeBundle };
  }
  const moduleOf = (args: string[]) => args[args.indexOf("--module") + 1];
  const entryOf = (args: string[]) => (args.includes("--entry") ? args[args.indexOf("--entry") + 1] : undefined);
  const argvOf = (args: string[]) => args.slice(args.indexOf("--") + 1);

  test("into an artifact container: args[0] naming the container's module runs the artifact, argv as given", async () => {
    const c = await artifactContainer(["./demo.wasm", "daemon"], "/srv");
    for (const [arg0, cwd] of [
      ["./demo.wasm", "/srv"], // the same string
      ["demo.wasm", "/work"], // its bare file name
      ["/srv/demo.wasm", "/work"], // the same path…
      ["../demo.wasm", "/srv/x"], // …from the exec's cwd
      ["/.bunwasi-artifact/module.wasm", "/"], // where it is mounted
    ] as const) {
      const r = await prepareExecProcess({
        ...c,
        engine: wasmtime,
        process: { ...proc([arg0, "echo", "hi"]), cwd },
        executorDir: fakeExec,
      });
      expect(r.kind).toBe("wasm");
      expect(moduleOf(r.process.args)).toBe("/.bunwasi-artifact/module.wasm");
      expect(entryOf(r.process.args)).toBeUndefined();
      expect(argvOf(r.process.args)).toEqual([arg0, "echo", "hi"]);
    }
  });

  test("into an artifact container: #export, with or without the module's name, calls that export", async () => {
    const c = await artifactContainer(["/demo.wasm"]);
    for (const arg0 of ["#hello", "/demo.wasm#hello"]) {
      const r = await prepareExecProcess({ ...c, engine: wasmtime, process: proc([arg0]), executorDir: fakeExec });
      expect(moduleOf(r.process.args)).toBe("/.bunwasi-artifact/module.wasm");
      expect(entryOf(r.process.args)).toBe("hello");
    }
  });

  test("into an artifact container: a file of its rootfs or volumes still runs as itself", async () => {
    const c = await artifactContainer(["/demo.wasm"]);
    const r = await prepareExecProcess({ ...c, engine: wasmtime, process: proc(["/app.wasm"]), executorDir: fakeExec });
    expect(moduleOf(r.process.args)).toBe("/app.wasm");
    const sh = proc(["sh"]);
    expect(await prepareExecProcess({ ...c, engine: wasmtime, process: sh, executorDir: fakeExec })).toEqual({
      process: sh,
      kind: "native",
    });
  });

  test("into an artifact container: any other name is refused, saying how to name the module", async () => {
    const c = await artifactContainer(["/demo.wasm"]);
    await expect(prepareExecProcess({ ...c, engine: wasmtime, process: proc(["ls", "/"]), executorDir: fakeExec })).rejects.toThrow(
      `ls: no such file in the container's rootfs (the container runs an OCI wasm artifact, whose module is the image's layer: exec it as "/demo.wasm" (the container's args[0]) or "#<export>")`,
    );
    for (const arg0 of ["/other/demo.wasm", ""])
      await expect(prepareExecProcess({ ...c, engine: wasmtime, process: proc([arg0]), executorDir: fakeExec })).rejects.toThrow(
        "exec it as",
      );
  });

  test("into an artifact container whose module is gone from its work dir: refused, naming it", async () => {
    const c = await artifactContainer(["/demo.wasm"]);
    rmSync(join(c.runtimeBundle, "artifact"), { recursive: true });
    await expect(prepareExecProcess({ ...c, engine: wasmtime, process: proc(["/demo.wasm"]), executorDir: fakeExec })).rejects.toThrow(
      "the artifact's module",
    );
  });
});
