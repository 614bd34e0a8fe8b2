// src/oci/spec.ts + src/oci/bundle.ts without runc: config.json errors, and normal mode's
// derived bundle made from the plan (the plan's own rules: ./container-plan.test.ts): the
// executor reads the plan from the run directory, and its process gets no env of the container.

import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { smallVmEntries } from "../../../src/common/vm-env.ts";
import type { Engine } from "../../../src/engines/engine.ts";
import { parseRunPlan, type RunPlan } from "../../../src/engines/run-plan.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { prepare, wasmSpec } from "../../../src/oci/bundle.ts";
import { planContainer } from "../../../src/oci/container-plan.ts";
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

describe("prepare: the derived bundle from the plan", () => {
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

  test("native: containerd's bundle unchanged, nothing written", async () => {
    const b = bundle(spec({ args: ["sh", "-c", "true"] }), { "bin/sh": { mode: 0o755, data: ELF } });
    const r = await prepare(opts(b, "nat"));
    expect(r).toMatchObject({ kind: "native", runtimeBundle: b });
    expect(existsSync(join(base, "state", "nat"))).toBe(false);
  });

  test("the plan builder's errors reach the Create as they are", async () => {
    const b = bundle(spec({ args: ["/nope.wasm", "x"] }));
    await expect(prepare(opts(b, "miss"))).rejects.toThrow("/nope.wasm: no such file in the container's rootfs");
    const c = bundle(spec({ args: ["/bin/sh#main"] }), { "bin/sh": { mode: 0o755, data: ELF } });
    await expect(prepare(opts(c, "nf"))).rejects.toThrow(/names a wasm export/);
  });

  test("an id that is no directory name is refused before anything is written", async () => {
    const b = bundle(spec(), { "app.wasm": WASM });
    await expect(prepare(opts(b, "../x"))).rejects.toThrow('container id "../x" is not a valid directory name');
  });

  test("an entrypoint missing from the rootfs: the artifact hook's wasm becomes the module, in the run directory", async () => {
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
    const dir = join(base, "state", "art1", "run");
    expect(r).toMatchObject({ kind: "wasm", module: "/.bunwasi-run/module.wasm", moduleHost: join(dir, "module.wasm"), entry: "run" });
    expect(r.run?.module).toEqual({
      host: join(dir, "module.wasm"),
      hostRoot: dir,
      path: "/.bunwasi-run/module.wasm",
      entry: "run",
      artifact: true,
    });
    expect(new Uint8Array(readFileSync(join(dir, "module.wasm")))).toEqual(WASM);
    // The executor reads the same plan, with argv as the spec gives it: args[0] stays the image's.
    const plan = parseRunPlan(readFileSync(join(dir, "plan.json"), "utf8"));
    expect(plan).toEqual(r.run as RunPlan);
    expect(plan.args).toEqual(["/demo.wasm#run", "x"]);
    const d = JSON.parse(readFileSync(join(r.runtimeBundle, "config.json"), "utf8")) as Spec;
    expect(d.process.args.slice(d.process.args.indexOf("--plan"), d.process.args.indexOf("--plan") + 2)).toEqual([
      "--plan",
      "/.bunwasi-run/plan.json",
    ]);
    expect(d.mounts).toContainEqual({
      destination: "/.bunwasi-run",
      type: "bind",
      source: dir,
      options: ["rbind", "ro", "nosuid", "nodev"],
    });
    removeDerived("art1");
  });

  test("wasm: the derived bundle runs the executor on the plan; its process env is the VM settings only", async () => {
    const env = [
      "PATH=/bin",
      "X=1",
      "LD_PRELOAD=/x.so",
      "BUN_OPTIONS=--preload /x.js",
      "NODE_OPTIONS=--require /x.js",
      "BUNWASI_EXECUTOR_WORKER=1",
      "X=2",
    ];
    const b = bundle(spec({ args: ["app.wasm#run", "a", "b"], cwd: "/srv", env, user: { uid: 1000, gid: 1000 } }), {
      "srv/app.wasm": WASM,
    });
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
      "--plan",
      "/.bunwasi-run/plan.json",
      "--engine-dir",
      "/.bunwasi",
      "--root-dir",
      "/dev/.bunwasi-root",
    ]);
    // Nothing of the container's env reaches the executor process: the module's env is in the plan.
    expect(d.process.env).toEqual(smallVmEntries());
    expect(d.process.env).toContain("TOKIO_WORKER_THREADS=1");
    const planFile = join(r.runtimeBundle, "run", "plan.json");
    const plan = parseRunPlan(readFileSync(planFile, "utf8"));
    expect(plan.env).toEqual([
      "PATH=/bin",
      "LD_PRELOAD=/x.so",
      "BUN_OPTIONS=--preload /x.js",
      "NODE_OPTIONS=--require /x.js",
      "BUNWASI_EXECUTOR_WORKER=1",
      "X=2",
    ]);
    expect(plan.args).toEqual(["app.wasm#run", "a", "b"]);
    expect(plan.limits.memoryBytes).toBe(64 << 20);
    // The plan holds the module's env: readable by the container's user only.
    const st = statSync(planFile);
    expect([st.mode & 0o777, st.uid, st.gid]).toEqual([0o400, 1000, 1000]);
    expect(d.process.cwd).toBe("/srv");
    expect(d.process.user).toEqual({ uid: 1000, gid: 1000 });
    expect(d.linux).toEqual(spec().linux as NonNullable<Spec["linux"]>);
    expect(d.mounts?.find((m) => m.destination === "/.bunwasi")).toEqual({
      destination: "/.bunwasi",
      type: "bind",
      source: fakeExec.dir,
      options: ["rbind", "ro", "nosuid", "nodev"],
    });
    removeDerived("w1");
  });

  test("the compile hook runs before the bundle is written: its file is bound in as the one compiled module", async () => {
    const b = bundle(spec({ args: ["/app.wasm"] }), { "app.wasm": WASM });
    const asked: unknown[] = [];
    const r = await prepare({
      ...opts(b, "cw1"),
      compile: async (m) => {
        asked.push(m);
        return "/var/lib/bunwasi/cache/k.cwasm";
      },
    });
    expect(asked).toEqual([{ kind: "wasm", module: "/app.wasm", moduleHost: join(b, "rootfs", "app.wasm") }]);
    const d = JSON.parse(readFileSync(join(r.runtimeBundle, "config.json"), "utf8")) as Spec;
    expect(d.process.args.slice(-4, -2)).toEqual(["--compiled", "/.bunwasi-run/module.cwasm"]);
    expect(d.mounts?.find((m) => m.destination === "/.bunwasi-run/module.cwasm")?.source).toBe("/var/lib/bunwasi/cache/k.cwasm");
    // Its mount point, made in the run directory (runc cannot make it inside a read-only bind).
    const st = statSync(join(r.runtimeBundle, "run", "module.cwasm"));
    expect([st.isFile(), st.size, st.mode & 0o777]).toEqual([true, 0, 0o444]);
    // No compile (no compiler, or it failed): no bind, no flag; the executor compiles.
    const none = await prepare({
      ...opts(bundle(spec({ args: ["/app.wasm"] }), { "app.wasm": WASM }), "cw2"),
      compile: async () => undefined,
    });
    const dn = JSON.parse(readFileSync(join(none.runtimeBundle, "config.json"), "utf8")) as Spec;
    expect(dn.process.args).not.toContain("--compiled");
    expect(dn.mounts?.some((m) => m.destination.endsWith("module.cwasm"))).toBe(false);
    expect(existsSync(join(none.runtimeBundle, "run", "module.cwasm"))).toBe(false);
    removeDerived("cw1");
    removeDerived("cw2");
  });

  test("the plan file is owned by the container's user through the spec's id mappings", async () => {
    const s = spec(
      { user: { uid: 0, gid: 0 } },
      {
        linux: {
          uidMappings: [{ containerID: 0, hostID: 200000, size: 65536 }],
          gidMappings: [{ containerID: 0, hostID: 300000, size: 65536 }],
        },
      },
    );
    const r = await prepare(opts(bundle(s, { "app.wasm": WASM }), "map1"));
    const st = statSync(join(r.runtimeBundle, "run", "plan.json"));
    expect([st.uid, st.gid]).toEqual([200000, 300000]);
    const unmapped = spec({ user: { uid: 70000, gid: 0 } }, { linux: { uidMappings: [{ containerID: 0, hostID: 200000, size: 65536 }] } });
    await expect(prepare(opts(bundle(unmapped, { "app.wasm": WASM }), "map2"))).rejects.toThrow(
      "config.json: process.user uid 70000 is not mapped by linux.uidMappings",
    );
    removeDerived("map1");
    removeDerived("map2");
  });

  test("wasmSpec with a pod of containerd's shim sandboxer: the server's IPC, UTS and PID joins become the container's own, its network is the pod's", async () => {
    const joins = [
      { type: "pid", path: "/proc/4242/ns/pid" },
      { type: "network", path: "/proc/4242/ns/net" },
      { type: "ipc", path: "/proc/4242/ns/ipc" },
      { type: "uts", path: "/proc/4242/ns/uts" },
      { type: "mount" },
    ];
    const s = spec({}, { linux: { namespaces: joins } });
    const b = bundle(s, { "app.wasm": WASM });
    const plan = await planContainer({ bundle: b, spec: s, engine: wasmtime });
    if (plan.kind !== "wasm") throw new Error("not wasm");
    const opts = { run: plan.run, exec: fakeExec, mountPoint: "/dev/.bunwasi", runDir: "/state/c/run" };
    // A host-network pod: the network join, the host's, stays.
    expect(wasmSpec(s, { ...opts, pod: { pid: 4242 } }).linux?.namespaces).toEqual([
      { type: "pid" },
      { type: "network", path: "/proc/4242/ns/net" },
      { type: "ipc" },
      { type: "uts" },
      { type: "mount" },
    ]);
    // A pod with a network namespace of its own (CRI's): the container joins that one.
    expect(wasmSpec(s, { ...opts, pod: { pid: 4242, netns: "/var/run/netns/cni-1" } }).linux?.namespaces).toEqual([
      { type: "pid" },
      { type: "network", path: "/var/run/netns/cni-1" },
      { type: "ipc" },
      { type: "uts" },
      { type: "mount" },
    ]);
    // A pause's pid (the podsandbox path), or no pod: the spec's namespaces as they are.
    expect(wasmSpec(s, { ...opts, pod: { pid: 1, netns: "/var/run/netns/cni-1" } }).linux?.namespaces).toEqual(joins);
    expect(wasmSpec(s, opts).linux?.namespaces).toEqual(joins);
    expect(s.linux?.namespaces).toEqual(joins); // containerd's spec is not touched
  });

  test("wasmSpec: subcommand, engine options, the one compiled module bound in, dev mount point, the view from the plan", async () => {
    const vol = join(base, "vol-ws");
    mkdirSync(vol, { recursive: true });
    const s = spec(
      {},
      {
        mounts: [
          { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid"] },
          { destination: "/data", type: "bind", source: vol, options: ["rbind", "rprivate", "ro"] },
          { destination: "/etc/hosts", type: "bind", source: "/etc/hosts", options: ["rbind", "ro"] },
        ],
      },
    );
    const b = bundle(s, { "app.wasm": WASM });
    const plan = await planContainer({ bundle: b, spec: s, engine: wasmtime });
    if (plan.kind !== "wasm") throw new Error("not wasm");
    const d = wasmSpec(s, {
      run: plan.run,
      exec: { ...fakeExec, binaryName: "containerd-shim-x-v1", subcommand: ["executor"], engineOptions: { opt: "2" } },
      mountPoint: "/dev/.bunwasi",
      runDir: "/state/c/run",
      compiled: "/var/lib/bunwasi/cache/k.cwasm",
    });
    expect(d.process.args.slice(0, 7)).toEqual([
      "/dev/.bunwasi/ld-linux-x86-64.so.2",
      "--library-path",
      "/dev/.bunwasi",
      "/dev/.bunwasi/containerd-shim-x-v1",
      "executor",
      "--plan",
      "/dev/.bunwasi-run/plan.json",
    ]);
    const i = d.process.args.indexOf("--engine-dir");
    expect(d.process.args.slice(i, i + 4)).toEqual(["--engine-dir", "/dev/.bunwasi", "--engine-opt", "opt=2"]);
    const c = d.process.args.indexOf("--compiled");
    expect(d.process.args.slice(c, c + 2)).toEqual(["--compiled", "/dev/.bunwasi-run/module.cwasm"]);
    // The run directory, then the compiled module inside it: one file, never the cache directory.
    const run = d.mounts?.findIndex((m) => m.destination === "/dev/.bunwasi-run") ?? -1;
    expect(d.mounts?.slice(run, run + 2)).toEqual([
      { destination: "/dev/.bunwasi-run", type: "bind", source: "/state/c/run", options: ["rbind", "ro", "nosuid", "nodev"] },
      {
        destination: "/dev/.bunwasi-run/module.cwasm",
        type: "bind",
        source: "/var/lib/bunwasi/cache/k.cwasm",
        options: ["bind", "ro", "nosuid", "nodev"],
      },
    ]);
    expect(d.mounts?.filter((m) => m.source?.startsWith("/var/lib/bunwasi/cache")).map((m) => m.source)).toEqual([
      "/var/lib/bunwasi/cache/k.cwasm",
    ]);
    // The module's view comes last: the rootfs again, and the volume (not the file bind, not the /dev tmpfs).
    expect(d.mounts?.slice(-2)).toEqual([
      { destination: "/dev/.bunwasi-root", type: "bind", source: join(b, "rootfs"), options: ["bind", "rw", "nosuid", "nodev"] },
      { destination: "/dev/.bunwasi-root/data", type: "bind", source: vol, options: ["bind", "ro", "nosuid", "nodev"] },
    ]);
    expect(s.process.args).toEqual(["/app.wasm"]); // input untouched
  });
});
