// src/oci/exec-process.ts without runc: the process of an Exec as the runtime gets it. A module
// exec'd into a wasm container becomes our executor at that container's mount, reading a plan
// of its own from the container's run directory (the container's rules: memory limit, view;
// the exec's args, env, cwd, user), a native program stays as given, and a module cannot be
// exec'd into a native container (it has no executor mount).

import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { smallVmEntries } from "../../../src/common/vm-env.ts";
import { parseRunPlan, type RunPlan } from "../../../src/engines/run-plan.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { prepare } from "../../../src/oci/bundle.ts";
import { planExec, prepareExecProcess } from "../../../src/oci/exec-process.ts";
import { type ExecutorDir, LOADER_NAME } from "../../../src/oci/executor-dir.ts";
import type { Spec, SpecProcess } from "../../../src/oci/spec.ts";
import { readSpec } from "../../../src/oci/spec.ts";

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
  // Another module (a custom section more): a compile of its own.
  writeFileSync(join(root, "bin/tool.wasm"), new Uint8Array([...WASM, 0, 1, 0]));
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

/** A container's bundles; `compiled`: its module's compile bound in (a cache file named by the module's key, as the compile cache names it). */
async function container(args: string[], compiled = false) {
  const b = bundle(args);
  const compile = async (m: { moduleHost?: string }) =>
    join(base, "cache", `${await wasmtime.compiler?.cacheKey(new Uint8Array(readFileSync(m.moduleHost ?? "")))}.cwasm`);
  const p = await prepare({
    id: `c${n}`,
    bundle: b,
    stateDir: join(base, "state"),
    executorDir: fakeExec,
    engine: wasmtime,
    ...(compiled ? { compile } : {}),
  });
  return { bundle: b, runtimeBundle: p.runtimeBundle };
}

/** The plan an exec's executor reads: the file its --plan names, in the container's run directory. */
function planOf(runtimeBundle: string, args: string[]): RunPlan {
  const file = args[args.indexOf("--plan") + 1] ?? "";
  expect(file.startsWith("/.bunwasi-run/exec-")).toBe(true);
  return parseRunPlan(readFileSync(join(runtimeBundle, "run", basename(file)), "utf8"));
}

describe("the process of an exec", () => {
  test("a module exec'd into a wasm container runs through the executor at the container's mount, on a plan of its own", async () => {
    const c = await container(["/app.wasm"]);
    const r = await prepareExecProcess({ ...c, engine: wasmtime, process: proc(["tool.wasm", "a", "b"]), executorDir: fakeExec });
    expect(r.kind).toBe("wasm");
    const planFile = r.process.args[5] ?? "";
    expect(r.process.args).toEqual([
      `/.bunwasi/${LOADER_NAME}`,
      "--library-path",
      "/.bunwasi",
      "/.bunwasi/bunwasi-executor",
      "--plan",
      planFile,
      "--engine-dir",
      "/.bunwasi",
      // the module's "/" is the container's view without /proc, /sys and /dev, as the init's
      "--root-dir",
      "/dev/.bunwasi-root",
    ]);
    // The exec's args, env (last wins), cwd and user, the container's limits and view: the same rules as the container's.
    const plan = planOf(c.runtimeBundle, r.process.args);
    expect(plan).toMatchObject({
      module: { host: join(c.bundle, "rootfs/bin/tool.wasm"), path: "/bin/tool.wasm" },
      args: ["tool.wasm", "a", "b"],
      env: ["PATH=/bin", "K=V"],
      cwd: "/work",
      limits: { memoryBytes: 32 << 20 },
      user: { uid: 7, gid: 7, additionalGids: [] },
      view: { root: join(c.bundle, "rootfs"), readOnly: false, volumes: [] },
    });
    // Readable by the exec's user only.
    const st = statSync(join(c.runtimeBundle, "run", basename(planFile)));
    expect([st.mode & 0o777, st.uid, st.gid]).toEqual([0o400, 7, 7]);
    // Everything else of the exec's process is kept: its cwd, user, terminal flag; its env is
    // the executor's VM settings only (the module's is in the plan).
    expect(r.process).toMatchObject({ cwd: "/work", env: smallVmEntries(), user: { uid: 7, gid: 7 }, terminal: false });
    // The same exec again writes the same file: a probe run every few seconds leaves one.
    const again = await prepareExecProcess({ ...c, engine: wasmtime, process: proc(["tool.wasm", "a", "b"]), executorDir: fakeExec });
    expect(again.process.args[5]).toBe(planFile);
    expect(readdirSync(join(c.runtimeBundle, "run")).filter((f) => f.startsWith("exec-"))).toHaveLength(1);
  });

  test("module#export is the plan's entry; the container's compiled module is the exec's too when it is the same module", async () => {
    const c = await container(["/app.wasm"], true);
    const r = await prepareExecProcess({ ...c, engine: wasmtime, process: proc(["/app.wasm#run"]), executorDir: fakeExec });
    expect(planOf(c.runtimeBundle, r.process.args).module.entry).toBe("run");
    expect(r.process.args[r.process.args.indexOf("--compiled") + 1]).toBe("/.bunwasi-run/module.cwasm");
    // Another module: no compile of it in the container (it sees no cache); its executor compiles it.
    const other = await prepareExecProcess({ ...c, engine: wasmtime, process: proc(["tool.wasm"]), executorDir: fakeExec });
    expect(other.kind).toBe("wasm");
    expect(other.process.args).not.toContain("--compiled");
    // A container whose module has no compile bound in: none for the exec either.
    const bare = await container(["/app.wasm"]);
    const r2 = await prepareExecProcess({ ...bare, engine: wasmtime, process: proc(["/app.wasm"]), executorDir: fakeExec });
    expect(r2.process.args).not.toContain("--compiled");
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

  test("into an artifact container: args[0] naming the container's module runs the artifact, argv as given", async () => {
    const c = await artifactContainer(["./demo.wasm", "daemon"], "/srv");
    for (const [arg0, cwd] of [
      ["./demo.wasm", "/srv"], // the same string
      ["demo.wasm", "/work"], // its bare file name
      ["/srv/demo.wasm", "/work"], // the same path…
      ["../demo.wasm", "/srv/x"], // …from the exec's cwd
      ["/.bunwasi-run/module.wasm", "/"], // where it is mounted
    ] as const) {
      const r = await prepareExecProcess({
        ...c,
        engine: wasmtime,
        process: { ...proc([arg0, "echo", "hi"]), cwd },
        executorDir: fakeExec,
      });
      expect(r.kind).toBe("wasm");
      const plan = planOf(c.runtimeBundle, r.process.args);
      expect(plan.module).toEqual({
        host: join(c.runtimeBundle, "run/module.wasm"),
        hostRoot: join(c.runtimeBundle, "run"),
        path: "/.bunwasi-run/module.wasm",
        artifact: true,
      });
      expect(plan.args).toEqual([arg0, "echo", "hi"]);
    }
  });

  test("into an artifact container: #export, with or without the module's name, calls that export", async () => {
    const c = await artifactContainer(["/demo.wasm"]);
    for (const arg0 of ["#hello", "/demo.wasm#hello"]) {
      const r = await prepareExecProcess({ ...c, engine: wasmtime, process: proc([arg0]), executorDir: fakeExec });
      const { module } = planOf(c.runtimeBundle, r.process.args);
      expect(module.path).toBe("/.bunwasi-run/module.wasm");
      expect(module.entry).toBe("hello");
    }
  });

  test("into an artifact container: a file of its rootfs or volumes still runs as itself", async () => {
    const c = await artifactContainer(["/demo.wasm"]);
    const r = await prepareExecProcess({ ...c, engine: wasmtime, process: proc(["/app.wasm"]), executorDir: fakeExec });
    expect(planOf(c.runtimeBundle, r.process.args).module).toEqual({
      host: join(c.bundle, "rootfs/app.wasm"),
      hostRoot: join(c.bundle, "rootfs"),
      path: "/app.wasm",
    });
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
    rmSync(join(c.runtimeBundle, "run/module.wasm"));
    await expect(prepareExecProcess({ ...c, engine: wasmtime, process: proc(["/demo.wasm"]), executorDir: fakeExec })).rejects.toThrow(
      "the artifact's module",
    );
  });

  test("planExec, as shared mode calls it: the exec's plan by the container's rules; an artifact's module by its host path", async () => {
    const b = bundle(["/app.wasm"]);
    const spec = await readSpec(b);
    const plan = await planExec({
      bundle: b,
      spec,
      engine: wasmtime,
      process: proc(["tool.wasm", "x"]),
      wasm: { artifact: () => undefined },
    });
    if (plan.kind !== "wasm") throw new Error("not wasm");
    expect(plan.run.module).toEqual({ host: join(b, "rootfs/bin/tool.wasm"), hostRoot: join(b, "rootfs"), path: "/bin/tool.wasm" });
    expect(plan.run).toMatchObject({ args: ["tool.wasm", "x"], cwd: "/work", user: { uid: 7, gid: 7 }, limits: { memoryBytes: 32 << 20 } });
    expect(await planExec({ bundle: b, spec, engine: wasmtime, process: proc(["sh"]), wasm: { artifact: () => undefined } })).toEqual({
      kind: "native",
      path: "/bin/sh",
    });
    // The artifact's module where the daemon keeps it (nothing is mounted into a container there).
    const run = join(base, `art-shared-${n++}`);
    mkdirSync(run);
    writeFileSync(join(run, "module.wasm"), WASM);
    const own = { host: join(run, "module.wasm"), hostRoot: run, path: join(run, "module.wasm") };
    const art = await planExec({
      bundle: b,
      spec: { ...spec, process: { ...spec.process, args: ["/demo.wasm"] } },
      engine: wasmtime,
      process: proc(["#hello"]),
      wasm: { artifact: () => own },
    });
    if (art.kind !== "wasm") throw new Error("not wasm");
    expect(art.run.module).toEqual({ ...own, entry: "hello", artifact: true });
  });
});
