// src/oci/spec.ts + src/oci/bundle.ts without runc: config.json errors, finding args[0] in a
// rootfs (PATH, cwd, symlinks that must not escape), classification through the engine's
// canHandle, the derived wasm spec.

import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SMALL_VM_ENV, withSmallVmEntries } from "../../../src/common/vm-env.ts";
import type { Engine } from "../../../src/engines/engine.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { findEntrypoint, isNativeExecutable, prepare, resolveInRootfs, splitEntry, wasmSpec } from "../../../src/oci/bundle.ts";
import type { ExecutorDir } from "../../../src/oci/executor-dir.ts";
import { parseSpec, readSpec, type Spec } from "../../../src/oci/spec.ts";

const base = mkdtempSync(join(tmpdir(), "bunwasi-bundle-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

const WASM = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
const ELF = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]);

function spec(over: Partial<Spec["process"]> = {}, rest: Partial<Spec> = {}): Spec {
  return {
    ociVersion: "1.0.2",
    process: { args: ["/app.wasm"], cwd: "/", env: ["PATH=/usr/bin:/bin"], user: { uid: 0, gid: 0 }, ...over },
    root: { path: "rootfs" },
    mounts: [{ destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid"] }],
    linux: { namespaces: [{ type: "pid" }, { type: "mount" }], cgroupsPath: "/bunwasi/x", resources: { memory: { limit: 64 << 20 } } },
    ...rest,
  } as Spec;
}

let n = 0;
/** A bundle dir with config.json and a rootfs holding `files` (path → bytes | {link} | {dir}). */
function bundle(
  s: Spec | string,
  files: Record<string, Uint8Array | string | { link: string } | { mode: number; data: Uint8Array }> = {},
): string {
  const b = join(base, `b${n++}`);
  const root = join(b, "rootfs");
  mkdirSync(root, { recursive: true });
  writeFileSync(join(b, "config.json"), typeof s === "string" ? s : JSON.stringify(s));
  for (const [p, v] of Object.entries(files)) {
    const host = join(root, p);
    mkdirSync(join(host, ".."), { recursive: true });
    if (typeof v === "object" && "link" in v) symlinkSync(v.link, host);
    else if (typeof v === "object" && "mode" in v) {
      writeFileSync(host, v.data);
      chmodSync(host, v.mode);
    } else writeFileSync(host, v);
  }
  return b;
}

describe("readSpec errors", () => {
  const cases: [string, string | object, RegExp][] = [
    ["invalid JSON", '{"ociVersion": "1",\n  "process": {,}}', /^config\.json: not valid JSON at line 2 column/],
    ["not an object", "[]", /top level must be a JSON object/],
    ["no process", { ociVersion: "1", root: { path: "r" } }, /config\.json: process is missing/],
    [
      "empty args",
      { ociVersion: "1", process: { args: [], cwd: "/" }, root: { path: "r" } },
      /^config\.json: process\.args is missing or empty$/,
    ],
    [
      "args not strings",
      { ociVersion: "1", process: { args: ["a", 3], cwd: "/" }, root: { path: "r" } },
      /process\.args\[1\] is not a string/,
    ],
    ["relative cwd", { ociVersion: "1", process: { args: ["a"], cwd: "x" }, root: { path: "r" } }, /process\.cwd must be an absolute path/],
    ["no root.path", { ociVersion: "1", process: { args: ["a"], cwd: "/" }, root: {} }, /^config\.json: root\.path missing$/],
    ["no root", { ociVersion: "1", process: { args: ["a"], cwd: "/" } }, /config\.json: root is missing/],
    [
      "env not array",
      { ociVersion: "1", process: { args: ["a"], cwd: "/", env: "A=1" }, root: { path: "r" } },
      /process\.env must be an array/,
    ],
  ];
  for (const [name, text, re] of cases) {
    test(name, () => {
      expect(() => parseSpec(typeof text === "string" ? text : JSON.stringify(text))).toThrow(re);
    });
  }
  test("missing file names the bundle", async () => {
    await expect(readSpec(join(base, "nope"))).rejects.toThrow(/config\.json: not found in bundle/);
  });
  test("a valid spec round-trips unknown fields", async () => {
    const s = await readSpec(bundle({ ...spec(), hooks: { prestart: [] } } as Spec));
    expect(s.process.args).toEqual(["/app.wasm"]);
    expect((s as Record<string, unknown>).hooks).toEqual({ prestart: [] });
  });
});

describe("args[0] resolution", () => {
  const b = bundle(spec(), {
    "app.wasm": WASM,
    "usr/bin/tool.wasm": WASM,
    "srv/work/local.wasm": WASM,
    "bin/link.wasm": { link: "../usr/bin/tool.wasm" },
    "bin/abs.wasm": { link: "/usr/bin/tool.wasm" },
    "bin/escape.wasm": { link: "../../../../../../etc/passwd" },
    "bin/escape2.wasm": { link: "/../../../etc/hostname" },
    "bin/loop.wasm": { link: "loop.wasm" },
    lib: { link: "/usr/bin" },
    "usr/bin/dir.wasm/x": WASM,
  });
  const root = join(b, "rootfs");
  const env = ["PATH=/usr/bin:/bin"];

  test("absolute path", async () => {
    expect((await findEntrypoint(root, "/app.wasm", env, "/"))?.path).toBe("/app.wasm");
  });
  test("bare name via PATH", async () => {
    expect((await findEntrypoint(root, "tool.wasm", env, "/"))?.path).toBe("/usr/bin/tool.wasm");
  });
  test("bare name falls back to cwd", async () => {
    expect((await findEntrypoint(root, "local.wasm", env, "/srv/work"))?.path).toBe("/srv/work/local.wasm");
  });
  test("relative path with a slash is relative to cwd", async () => {
    expect((await findEntrypoint(root, "./work/local.wasm", env, "/srv"))?.path).toBe("/srv/work/local.wasm");
  });
  test("no PATH in env: default PATH", async () => {
    expect((await findEntrypoint(root, "tool.wasm", undefined, "/"))?.path).toBe("/usr/bin/tool.wasm");
  });
  test("relative and absolute symlinks resolve inside the rootfs", async () => {
    expect((await findEntrypoint(root, "link.wasm", env, "/"))?.path).toBe("/usr/bin/tool.wasm");
    expect((await findEntrypoint(root, "/bin/abs.wasm", env, "/"))?.path).toBe("/usr/bin/tool.wasm");
    expect((await findEntrypoint(root, "/lib/tool.wasm", env, "/"))?.path).toBe("/usr/bin/tool.wasm");
  });
  test("symlinks cannot escape the rootfs", async () => {
    // ../../.. stops at the container's "/": /etc/passwd of the rootfs, which does not exist
    expect(await findEntrypoint(root, "/bin/escape.wasm", env, "/")).toBeUndefined();
    expect(await findEntrypoint(root, "/bin/escape2.wasm", env, "/")).toBeUndefined();
    expect(await resolveInRootfs(root, "/../../../../etc/passwd")).toBeUndefined();
    const r = await resolveInRootfs(root, "/bin/../../../app.wasm");
    expect(r?.host).toBe(join(root, "app.wasm"));
  });
  test("symlink loops and directories are not entrypoints", async () => {
    expect(await findEntrypoint(root, "/bin/loop.wasm", env, "/")).toBeUndefined();
    expect(await findEntrypoint(root, "/usr/bin/dir.wasm", env, "/")).toBeUndefined();
  });
  test("a path under a bind mount (a volume) is found in the mount's source", async () => {
    const vol = bundle(spec(), {
      "bin/app.wasm": WASM,
      "bin/link.wasm": { link: "/bin/app.wasm" },
      "bin/out.wasm": { link: "../../../../etc/passwd" },
    });
    const volume = join(vol, "rootfs");
    const mounts = [
      { destination: "/shared", type: "bind", source: volume, options: ["rbind", "ro"] },
      { destination: "/proc", type: "proc", source: "proc" },
    ];
    expect(await findEntrypoint(root, "/shared/bin/app.wasm", env, "/", mounts)).toEqual({
      host: join(volume, "bin/app.wasm"),
      path: "/shared/bin/app.wasm",
    });
    // Symlinks inside the volume resolve inside the volume, never outside it.
    expect((await findEntrypoint(root, "/shared/bin/link.wasm", env, "/", mounts))?.host).toBe(join(volume, "bin/app.wasm"));
    expect(await findEntrypoint(root, "/shared/bin/out.wasm", env, "/", mounts)).toBeUndefined();
    // Not under any mount: the rootfs, as before.
    expect((await findEntrypoint(root, "/app.wasm", env, "/", mounts))?.host).toBe(join(root, "app.wasm"));
  });
  test("module.wasm#func", () => {
    expect(splitEntry("/app.wasm#hello")).toEqual({ path: "/app.wasm", entry: "hello" });
    expect(splitEntry("/a#b/app.wasm")).toEqual({ path: "/a#b/app.wasm" });
    expect(splitEntry("app.wasm#")).toEqual({ path: "app.wasm#" });
    expect(splitEntry("#x")).toEqual({ path: "#x" });
  });
});

describe("classification", () => {
  test("native programs by content and mode", () => {
    expect(isNativeExecutable(ELF, true)).toBe(true);
    expect(isNativeExecutable(new TextEncoder().encode("#!/bin/sh\n"), true)).toBe(true);
    expect(isNativeExecutable(ELF, false)).toBe(false);
    expect(isNativeExecutable(WASM, true)).toBe(false);
    expect(isNativeExecutable(new TextEncoder().encode("hello"), true)).toBe(false);
  });

  const fakeExec: ExecutorDir = {
    dir: "/run/bunwasi/exec/abc",
    binaryName: "bunwasi-executor",
    subcommand: [],
    engineOptions: {},
    files: [],
  };
  // The service removes a container's work directory (the derived bundle's) on Delete.
  const removeDerived = (id: string) => rmSync(join(base, "state", id), { recursive: true, force: true });
  const opts = (b: string, id: string, engine: Engine = wasmtime) => ({
    id,
    bundle: b,
    stateDir: join(base, "state"),
    executorDir: fakeExec,
    engine,
  });

  test("wasm binaries and WAT text are the wasmtime engine's", async () => {
    const b = bundle(spec({ args: ["/a.wasm"] }), { "a.wasm": WASM, "t.wat": ";; hi\n(module)" });
    expect((await prepare(opts(b, "k1"))).kind).toBe("wasm");
    const t = bundle(spec({ args: ["/t.wat"] }), { "t.wat": ";; hi\n(module)" });
    expect((await prepare(opts(t, "k2"))).kind).toBe("wasm");
    removeDerived("k1");
    removeDerived("k2");
  });
  test("the engine decides what is a module: canHandle sees the entrypoint and the spec", async () => {
    const seen: string[] = [];
    const picky: Engine = {
      ...wasmtime,
      name: "picky",
      canHandle: (ep, s) => {
        seen.push(`${ep.path} ${ep.host.endsWith("/rootfs/srv/app.txt")} ${s.process?.cwd}`);
        return new TextDecoder().decode(ep.head).startsWith("PICK");
      },
    };
    const b = bundle(spec({ args: ["app.txt"], cwd: "/srv" }), { "srv/app.txt": "PICK me" });
    expect(await prepare(opts(b, "p1", picky))).toMatchObject({ kind: "wasm", module: "/srv/app.txt" });
    expect(seen).toEqual(["/srv/app.txt true /srv"]);
    // A wasm module this engine does not take is neither its nor native.
    const w = bundle(spec({ args: ["/a.wasm"] }), { "a.wasm": WASM });
    await expect(prepare(opts(w, "p2", picky))).rejects.toThrow("/a.wasm: not a wasm module and not executable");
    removeDerived("p1");
  });

  test("native: containerd's bundle unchanged", async () => {
    const b = bundle(spec({ args: ["sh", "-c", "true"] }), { "bin/sh": { mode: 0o755, data: ELF } });
    const r = await prepare(opts(b, "nat"));
    expect(r).toMatchObject({ kind: "native", runtimeBundle: b });
  });
  test("missing entrypoint", async () => {
    const b = bundle(spec({ args: ["/nope.wasm", "x"] }));
    await expect(prepare(opts(b, "miss"))).rejects.toThrow("/nope.wasm: no such file in the container's rootfs");
  });
  test("neither wasm nor executable", async () => {
    const b = bundle(spec({ args: ["/data.txt"] }), { "data.txt": "hello" });
    await expect(prepare(opts(b, "bad"))).rejects.toThrow("/data.txt: not a wasm module and not executable");
    const c = bundle(spec({ args: ["/elf"] }), { elf: { mode: 0o644, data: ELF } });
    await expect(prepare(opts(c, "bad2"))).rejects.toThrow("/elf: not a wasm module and not executable");
  });
  test("#func on a native binary is refused", async () => {
    const b = bundle(spec({ args: ["/bin/sh#main"] }), { "bin/sh": { mode: 0o755, data: ELF } });
    await expect(prepare(opts(b, "nf"))).rejects.toThrow(/names a wasm export/);
  });

  test("an entrypoint missing from the rootfs: the artifact hook's wasm becomes the module, mounted read-only", async () => {
    const b = bundle(spec({ args: ["/demo.wasm#run", "x"] }));
    let asked = 0;
    const r = await prepare({
      ...opts(b, "art1"),
      artifact: async () => {
        asked++;
        return { bytes: WASM };
      },
    });
    expect(asked).toBe(1);
    const dir = join(base, "state", "art1", "artifact");
    expect(r).toMatchObject({ kind: "wasm", module: "/.bunwasi-artifact/module.wasm", moduleHost: join(dir, "module.wasm"), entry: "run" });
    expect(new Uint8Array(readFileSync(join(dir, "module.wasm")))).toEqual(WASM);
    const d = JSON.parse(readFileSync(join(r.runtimeBundle, "config.json"), "utf8")) as Spec;
    expect(d.process.args.slice(d.process.args.indexOf("--module"), d.process.args.indexOf("--module") + 4)).toEqual([
      "--module",
      "/.bunwasi-artifact/module.wasm",
      "--entry",
      "run",
    ]);
    // argv as the spec gives it: args[0] stays the image's.
    expect(d.process.args.slice(d.process.args.indexOf("--") + 1)).toEqual(["/demo.wasm#run", "x"]);
    expect(d.mounts).toContainEqual({
      destination: "/.bunwasi-artifact",
      type: "bind",
      source: dir,
      options: ["rbind", "ro", "nosuid", "nodev"],
    });
  });

  test("an artifact's args[0] may be only #export (as in runwasi, where it only ever names the export)", async () => {
    const b = bundle(spec({ args: ["#run", "x"] }));
    const r = await prepare({ ...opts(b, "art4"), artifact: async () => ({ bytes: WASM }) });
    expect(r).toMatchObject({ kind: "wasm", module: "/.bunwasi-artifact/module.wasm", entry: "run" });
    // "#" alone names nothing: the default entry.
    const c = bundle(spec({ args: ["#"] }));
    expect((await prepare({ ...opts(c, "art5"), artifact: async () => ({ bytes: WASM }) })).entry).toBeUndefined();
  });

  test("an entrypoint missing from the rootfs of an image that is no artifact: the rootfs error stands", async () => {
    const b = bundle(spec({ args: ["/nope.wasm"] }));
    await expect(prepare({ ...opts(b, "art2"), artifact: async () => undefined })).rejects.toThrow(
      /no such file in the container's rootfs/,
    );
    // A file that is there never asks.
    const c = bundle(spec({ args: ["/a.wasm"] }), { "a.wasm": WASM });
    await prepare({ ...opts(c, "art3"), artifact: async () => Promise.reject(new Error("asked")) });
  });

  test("wasm: derived bundle", async () => {
    const b = bundle(spec({ args: ["app.wasm#run", "a", "b"], cwd: "/srv", env: ["PATH=/bin", "X=1"] }), { "srv/app.wasm": WASM });
    const r = await prepare(opts(b, "w1"));
    expect(r).toMatchObject({
      kind: "wasm",
      module: "/srv/app.wasm",
      moduleHost: join(b, "rootfs", "srv", "app.wasm"),
      entry: "run",
      runtimeBundle: join(base, "state", "w1"),
    });
    const d = JSON.parse(readFileSync(join(r.runtimeBundle, "config.json"), "utf8")) as Spec;
    expect(d.root.path).toBe(join(b, "rootfs"));
    expect(d.process.args).toEqual([
      "/.bunwasi/ld-linux-x86-64.so.2",
      "--library-path",
      "/.bunwasi",
      "/.bunwasi/bunwasi-executor",
      "--module",
      "/srv/app.wasm",
      "--entry",
      "run",
      "--engine-dir",
      "/.bunwasi",
      "--memory-limit",
      String(64 << 20),
      "--root-dir",
      "/dev/.bunwasi-root",
      "--",
      "app.wasm#run",
      "a",
      "b",
    ]);
    // The spec's env, then the executor's JSC options (src/common/vm-env.ts), named so the executor hides them from the module.
    expect(d.process.env).toEqual(withSmallVmEntries(["PATH=/bin", "X=1"]));
    expect(d.process.env?.slice(0, 2)).toEqual(["PATH=/bin", "X=1"]);
    expect(d.process.env).toContain(`BUNWASI_VM_ENV=${Object.keys(SMALL_VM_ENV).join(",")}`);
    expect(d.process.env).toContain("TOKIO_WORKER_THREADS=1");
    expect(d.process.cwd).toBe("/srv");
    expect(d.linux).toEqual(spec().linux as NonNullable<Spec["linux"]>);
    expect(d.mounts?.find((m) => m.destination === "/.bunwasi")).toEqual({
      destination: "/.bunwasi",
      type: "bind",
      source: fakeExec.dir,
      options: ["rbind", "ro", "nosuid", "nodev"],
    });
    removeDerived("w1");
  });

  test("wasmSpec: subcommand, engine options, cache mount, dev mount point", () => {
    const s = spec();
    const d = wasmSpec(s, {
      rootfs: "/r",
      module: "/app.wasm",
      exec: { ...fakeExec, binaryName: "containerd-shim-x-v1", subcommand: ["executor"], engineOptions: { opt: "2" } },
      mountPoint: "/dev/.bunwasi",
      cacheDir: "/var/cache/bunwasi",
    });
    expect(d.process.args.slice(0, 6)).toEqual([
      "/dev/.bunwasi/ld-linux-x86-64.so.2",
      "--library-path",
      "/dev/.bunwasi",
      "/dev/.bunwasi/containerd-shim-x-v1",
      "executor",
      "--module",
    ]);
    const i = d.process.args.indexOf("--engine-dir");
    expect(d.process.args.slice(i, i + 4)).toEqual(["--engine-dir", "/dev/.bunwasi", "--engine-opt", "opt=2"]);
    expect(d.process.args).toContain("--cache");
    expect(d.mounts?.find((m) => m.destination === "/.bunwasi-cache")).toMatchObject({
      options: ["rbind", "ro", "nosuid", "nodev"],
    });
    // The module's view comes last: the rootfs again, without the /dev tmpfs.
    expect(d.mounts?.slice(-1)).toEqual([
      { destination: "/dev/.bunwasi-root", type: "bind", source: "/r", options: ["bind", "rw", "nosuid", "nodev"] },
    ]);
    expect(s.process.args).toEqual(["/app.wasm"]); // input untouched
  });
});
