// The plan builder (src/oci/container-plan.ts), the one place both modes take a container's
// RunPlan from: a table of specs and rootfs contents in, the plan (or the user's error) out.
// Entrypoint forms, artifacts, volumes, a read-only root, kernel mounts, symlinks out of the
// rootfs, users, env, limits, the network namespace. End to end, the same cases run in both
// modes in test/e2e/plan-cases.test.ts.

import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Engine } from "../../../src/engines/engine.ts";
import type { RunPlan } from "../../../src/engines/run-plan.ts";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { ArtifactError } from "../../../src/oci/artifact.ts";
import { type ArtifactSource, type ContainerPlan, lastWins, planContainer, splitEntry } from "../../../src/oci/container-plan.ts";
import type { Spec, SpecMount } from "../../../src/oci/spec.ts";

const base = mkdtempSync(join(tmpdir(), "bunwasi-plan-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

const WASM = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
const ELF = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]);

type Files = Record<string, Uint8Array | string | { link: string } | { mode: number; data: Uint8Array } | { dir: true }>;

function spec(process: Partial<Spec["process"]> = {}, rest: Partial<Spec> = {}): Spec {
  return {
    ociVersion: "1.0.2",
    process: { args: ["/app.wasm"], cwd: "/", env: ["PATH=/usr/bin:/bin"], ...process },
    root: { path: "rootfs" },
    ...rest,
  } as Spec;
}

let n = 0;
function put(root: string, files: Files): void {
  for (const [p, v] of Object.entries(files)) {
    const host = join(root, p);
    mkdirSync(join(host, ".."), { recursive: true });
    if (v instanceof Uint8Array || typeof v === "string") writeFileSync(host, v);
    else if ("link" in v) symlinkSync(v.link, host);
    else if ("dir" in v) mkdirSync(host, { recursive: true });
    else {
      writeFileSync(host, v.data);
      chmodSync(host, v.mode);
    }
  }
}

/** A bundle dir whose rootfs holds `files`; the spec is given to the builder as is. */
function bundle(files: Files = {}): string {
  const b = join(base, `b${n++}`);
  mkdirSync(join(b, "rootfs"), { recursive: true });
  put(join(b, "rootfs"), files);
  return b;
}

/** A host directory (a volume's source) holding `files`. */
function volume(files: Files = {}): string {
  const v = join(base, `v${n++}`);
  mkdirSync(v, { recursive: true });
  put(v, files);
  return v;
}

const ROOTFS: Files = {
  "app.wasm": WASM,
  "usr/bin/tool.wasm": WASM,
  "srv/work/local.wasm": WASM,
  "bin/link.wasm": { link: "../usr/bin/tool.wasm" },
  "bin/abs.wasm": { link: "/usr/bin/tool.wasm" },
  "bin/escape.wasm": { link: "../../../../../../usr/bin/true" },
  "bin/escape2.wasm": { link: "/../../../bin/true" },
  "bin/loop.wasm": { link: "loop.wasm" },
  lib: { link: "/usr/bin" },
  "usr/bin/dir.wasm/x": WASM,
  "bin/sh": { mode: 0o755, data: ELF },
  "data.txt": "hello",
  elf: { mode: 0o644, data: ELF },
};

async function wasmPlan(b: string, s: Spec, artifact?: ArtifactSource, engine: Engine = wasmtime): Promise<RunPlan> {
  const p = await planContainer({ bundle: b, spec: s, engine, ...(artifact ? { artifact } : {}) });
  if (p.kind !== "wasm") throw new Error(`expected a wasm plan, got ${p.kind}`);
  return p.run;
}

describe("entrypoint forms", () => {
  const b = bundle(ROOTFS);
  const root = join(b, "rootfs");
  const cases: [string, Partial<Spec["process"]>, { path: string; entry?: string }][] = [
    ["absolute path", { args: ["/app.wasm"] }, { path: "/app.wasm" }],
    ["relative to cwd (a name with a slash)", { args: ["./work/local.wasm"], cwd: "/srv" }, { path: "/srv/work/local.wasm" }],
    ["bare name via PATH", { args: ["tool.wasm"] }, { path: "/usr/bin/tool.wasm" }],
    ["bare name, not on PATH: cwd", { args: ["local.wasm"], cwd: "/srv/work" }, { path: "/srv/work/local.wasm" }],
    ["bare name, no PATH in env: the default PATH", { args: ["tool.wasm"], env: [] }, { path: "/usr/bin/tool.wasm" }],
    ["#export", { args: ["/app.wasm#run", "x"] }, { path: "/app.wasm", entry: "run" }],
    ["bare name with #export", { args: ["tool.wasm#go"] }, { path: "/usr/bin/tool.wasm", entry: "go" }],
    ["a relative symlink resolves inside the rootfs", { args: ["link.wasm"], env: ["PATH=/bin"] }, { path: "/usr/bin/tool.wasm" }],
    ["an absolute symlink restarts at the rootfs, not the host's /", { args: ["/bin/abs.wasm"] }, { path: "/usr/bin/tool.wasm" }],
    ["a symlinked directory on the way", { args: ["/lib/tool.wasm"] }, { path: "/usr/bin/tool.wasm" }],
  ];
  for (const [name, process, want] of cases) {
    test(name, async () => {
      const run = await wasmPlan(b, spec(process));
      const host = join(root, want.path);
      // hostRoot: where the host opens it again, inside the rootfs (src/engines/module-file.ts).
      expect(run.module).toEqual({ host, hostRoot: root, path: want.path, ...(want.entry ? { entry: want.entry } : {}) });
      // argv as given: args[0] with its "#export" too.
      expect(run.args).toEqual(process.args as string[]);
    });
  }

  const refused: [string, string[], string][] = [
    [
      "a symlink out of the rootfs (relative) stops at its /",
      ["/bin/escape.wasm"],
      "/bin/escape.wasm: no such file in the container's rootfs",
    ],
    [
      "a symlink out of the rootfs (absolute, with ..) stops at its /",
      ["/bin/escape2.wasm"],
      "/bin/escape2.wasm: no such file in the container's rootfs",
    ],
    ["a symlink loop", ["/bin/loop.wasm"], "/bin/loop.wasm: no such file in the container's rootfs"],
    ["a directory", ["/usr/bin/dir.wasm"], "/usr/bin/dir.wasm: no such file in the container's rootfs"],
    ["missing", ["/nope.wasm", "x"], "/nope.wasm: no such file in the container's rootfs"],
    ["neither wasm nor executable", ["/data.txt"], "/data.txt: not a wasm module and not executable"],
    ["an ELF without an execute bit", ["/elf"], "/elf: not a wasm module and not executable"],
    ["#export on a native executable", ["/bin/sh#main"], '/bin/sh#main: "#main" names a wasm export, but /bin/sh is a native executable'],
  ];
  for (const [name, args, message] of refused) {
    test(`refused: ${name}`, async () => {
      await expect(planContainer({ bundle: b, spec: spec({ args }), engine: wasmtime })).rejects.toThrow(message);
    });
  }

  test("the host's file a symlink names is never the module (/usr/bin/true exists on the host)", () => {
    expect(statSync("/usr/bin/true").isFile()).toBe(true);
  });

  test("native: an ELF with an execute bit, found through PATH", async () => {
    const s = spec({ args: ["sh", "-c", "true"] });
    expect(await planContainer({ bundle: b, spec: s, engine: wasmtime })).toEqual({ kind: "native", spec: s } satisfies ContainerPlan);
  });

  test("the engine decides what is a module: canHandle sees the entrypoint and the spec", async () => {
    const seen: string[] = [];
    const picky: Engine = {
      ...wasmtime,
      name: "picky",
      canHandle: (ep, s) => {
        seen.push(`${ep.path} ${ep.host === join(root, "data.txt")} ${s.process?.cwd}`);
        return new TextDecoder().decode(ep.head) === "hello";
      },
    };
    expect((await wasmPlan(b, spec({ args: ["data.txt"], cwd: "/" }), undefined, picky)).module.path).toBe("/data.txt");
    expect(seen).toEqual(["/data.txt true /"]);
    // A wasm module this engine does not take is neither its nor native.
    await expect(planContainer({ bundle: b, spec: spec(), engine: picky })).rejects.toThrow(
      "/app.wasm: not a wasm module and not executable",
    );
  });

  test("module.wasm#func splits in the last path component only", () => {
    expect(splitEntry("/app.wasm#hello")).toEqual({ path: "/app.wasm", entry: "hello" });
    expect(splitEntry("/a#b/app.wasm")).toEqual({ path: "/a#b/app.wasm" });
    expect(splitEntry("app.wasm#")).toEqual({ path: "app.wasm#" });
    expect(splitEntry("#x")).toEqual({ path: "#x" });
  });
});

describe("a module on a volume", () => {
  const b = bundle({ "app.wasm": WASM });
  const vol = volume({
    "bin/app.wasm": WASM,
    "bin/link.wasm": { link: "/bin/app.wasm" },
    "bin/out.wasm": { link: "../../../../app.wasm" },
  });
  const mounts: SpecMount[] = [
    { destination: "/shared", type: "bind", source: vol, options: ["rbind", "ro"] },
    { destination: "/proc", type: "proc", source: "proc" },
  ];
  test("is found in the volume's source, as the container will see it", async () => {
    const run = await wasmPlan(b, spec({ args: ["/shared/bin/app.wasm"] }, { mounts }));
    expect(run.module).toEqual({ host: join(vol, "bin/app.wasm"), hostRoot: vol, path: "/shared/bin/app.wasm" });
  });
  test("its symlinks resolve inside the volume, never out of it", async () => {
    expect((await wasmPlan(b, spec({ args: ["/shared/bin/link.wasm"] }, { mounts }))).module.host).toBe(join(vol, "bin/app.wasm"));
    await expect(
      planContainer({ bundle: b, spec: spec({ args: ["/shared/bin/out.wasm"] }, { mounts }), engine: wasmtime }),
    ).rejects.toThrow("no such file in the container's rootfs");
  });
});

describe("OCI wasm artifacts (args[0] in no rootfs)", () => {
  /** `bytes` null: the image is no artifact. */
  const artifact = (dir: string, bytes: Uint8Array | null = WASM, seenAt?: string): ArtifactSource & { asked: number } => {
    const a = {
      asked: 0,
      dir,
      find: async () => {
        a.asked++;
        return bytes ? { bytes } : undefined;
      },
      ...(seenAt ? { seenAt: async () => seenAt } : {}),
    };
    return a;
  };
  const cases: [string, string[], string | undefined][] = [
    ["a path with #export", ["/demo.wasm#run", "x"], "run"],
    ["#name alone names an export (as in runwasi)", ["#greet"], "greet"],
    ["# alone names nothing: the default entry", ["#"], undefined],
    ["a path alone: _start", ["demo.wasm"], undefined],
  ];
  for (const [name, args, entry] of cases) {
    test(name, async () => {
      const b = bundle();
      const dir = join(base, `run${n++}`);
      const a = artifact(dir, WASM, "/.bunwasi-run");
      const run = await wasmPlan(b, spec({ args }), a);
      expect(a.asked).toBe(1);
      expect(run.module).toEqual({
        host: join(dir, "module.wasm"),
        hostRoot: dir,
        path: "/.bunwasi-run/module.wasm",
        ...(entry ? { entry } : {}),
        artifact: true,
      });
      expect(new Uint8Array(readFileSync(join(dir, "module.wasm")))).toEqual(WASM);
      expect(statSync(join(dir, "module.wasm")).mode & 0o777).toBe(0o644);
      expect(run.args).toEqual(args);
    });
  }

  test("nothing mounted into a container (shared mode): the module is named by its host path", async () => {
    const dir = join(base, `run${n++}`);
    const run = await wasmPlan(bundle(), spec({ args: ["#greet"] }), artifact(dir));
    expect(run.module).toEqual({
      host: join(dir, "module.wasm"),
      hostRoot: dir,
      path: join(dir, "module.wasm"),
      entry: "greet",
      artifact: true,
    });
  });

  test("a file of the rootfs never asks", async () => {
    const a = artifact(join(base, `run${n++}`));
    await wasmPlan(bundle({ "app.wasm": WASM }), spec(), a);
    expect(a.asked).toBe(0);
  });

  test("an image that is no artifact: the rootfs error stands", async () => {
    const s = spec({ args: ["/nope.wasm"] });
    await expect(planContainer({ bundle: bundle(), spec: s, engine: wasmtime, artifact: artifact(join(base, "x"), null) })).rejects.toThrow(
      /^\/nope\.wasm: no such file in the container's rootfs$/,
    );
  });

  test("containerd not answering: the rootfs error, with why we could not look further", async () => {
    const a: ArtifactSource = { dir: join(base, "y"), find: () => Promise.reject(new Error("connection refused")) };
    await expect(planContainer({ bundle: bundle(), spec: spec({ args: ["/nope.wasm"] }), engine: wasmtime, artifact: a })).rejects.toThrow(
      "/nope.wasm: no such file in the container's rootfs (and containerd could not tell whether the image is a wasm artifact: Error: connection refused)",
    );
  });

  test("an artifact the shim cannot run: its own error", async () => {
    const a: ArtifactSource = { dir: join(base, "z"), find: () => Promise.reject(new ArtifactError("two wasm layers")) };
    await expect(planContainer({ bundle: bundle(), spec: spec({ args: ["#x"] }), engine: wasmtime, artifact: a })).rejects.toThrow(
      "two wasm layers",
    );
  });

  test("a layer that is not a module of the engine is refused, before anything is written", async () => {
    const dir = join(base, `run${n++}`);
    await expect(wasmPlan(bundle(), spec({ args: ["#x"] }), artifact(dir, new TextEncoder().encode("not wasm")))).rejects.toThrow(
      "the image's wasm layer is not a module wasmtime runs",
    );
    expect(() => statSync(dir)).toThrow();
  });
});

describe("the WASI view", () => {
  const data = volume({ f: "data" });
  const config = volume({ c: "config" });
  const file = join(volume({ "resolv.conf": "nameserver 127.0.0.1\n" }), "resolv.conf");
  /** What containerd's CRI puts in a spec, plus volumes of every kind. */
  const mounts: SpecMount[] = [
    { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec"] },
    { destination: "/dev/shm", type: "bind", source: data, options: ["rbind", "rprivate", "rw"] },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
    { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["ro"] },
    { destination: "/run", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev"] },
    { destination: "/etc/resolv.conf", type: "bind", source: file, options: ["rbind", "ro"] },
    { destination: "/data/", type: "bind", source: data, options: ["rbind", "rprivate", "rw"] },
    { destination: "/etc/config", source: config, options: ["rbind", "ro"] },
    { destination: "/host-proc", type: "bind", source: "/proc", options: ["rbind"] },
    { destination: "/host-dev", type: "bind", source: "/dev", options: ["rbind"] },
    { destination: "/", type: "bind", source: data, options: ["rbind"] },
    { destination: "/gone", type: "bind", source: join(base, "no-such-dir"), options: ["rbind"] },
    { destination: "relative", type: "bind", source: data, options: ["rbind"] },
    { destination: "/processed", type: "bind", source: config, options: ["bind"] },
  ];

  test("the rootfs, then each bind-mounted directory with its read-only flag, in the spec's order; nothing else", async () => {
    const b = bundle({ "app.wasm": WASM });
    const run = await wasmPlan(b, spec({}, { mounts }));
    expect(run.view).toEqual({
      root: join(b, "rootfs"),
      readOnly: false,
      volumes: [
        { source: data, destination: "/data", readOnly: false },
        { source: config, destination: "/etc/config", readOnly: true },
        // A name that only starts like a hidden directory is kept.
        { source: config, destination: "/processed", readOnly: false },
      ],
    });
  });

  test("a read-only root gives a read-only view", async () => {
    const b = bundle({ "app.wasm": WASM });
    expect((await wasmPlan(b, spec({}, { root: { path: "rootfs", readonly: true } }))).view.readOnly).toBe(true);
  });

  test("an absolute root.path is taken as is", async () => {
    const b = bundle({ "app.wasm": WASM });
    expect((await wasmPlan(b, spec({}, { root: { path: join(b, "rootfs") } }))).view.root).toBe(join(b, "rootfs"));
  });
});

describe("env, cwd, user, limits, network", () => {
  const b = bundle({ "app.wasm": WASM });

  test("env: the last entry of a repeated key wins, where it stands (runc's prepareEnv)", async () => {
    const env = ["A=1", "G=image", "LD_PRELOAD=/x.so", "B=2", "G=pod", "C"];
    expect((await wasmPlan(b, spec({ env }))).env).toEqual(["A=1", "LD_PRELOAD=/x.so", "B=2", "G=pod", "C"]);
    expect(lastWins([])).toEqual([]);
    expect((await wasmPlan(b, spec({ env: undefined }))).env).toEqual([]);
  });

  test("cwd as given", async () => {
    expect((await wasmPlan(b, spec({ cwd: "/srv" }))).cwd).toBe("/srv");
  });

  const users: [string, Spec["process"]["user"], RunPlan["user"]][] = [
    ["none: root", undefined, { uid: 0, gid: 0, additionalGids: [] }],
    ["uid and gid", { uid: 1000, gid: 100 }, { uid: 1000, gid: 100, additionalGids: [] }],
    ["with additional groups", { uid: 7, gid: 7, additionalGids: [10, 20] }, { uid: 7, gid: 7, additionalGids: [10, 20] }],
  ];
  for (const [name, user, want] of users) {
    test(`user: ${name}`, async () => {
      expect((await wasmPlan(b, spec({ user }))).user).toEqual(want);
    });
  }

  const limits: [string, Partial<Spec>, Partial<Spec["process"]>, RunPlan["limits"]][] = [
    ["none", {}, {}, {}],
    ["a memory limit", { linux: { resources: { memory: { limit: 64 << 20 } } } }, {}, { memoryBytes: 64 << 20 }],
    ["memory -1 is unlimited", { linux: { resources: { memory: { limit: -1 } } } }, {}, {}],
    ["memory 0 is unlimited", { linux: { resources: { memory: { limit: 0 } } } }, {}, {}],
    [
      "CPU quota, period and shares, as given",
      { linux: { resources: { cpu: { quota: 10000, period: 100000, shares: 102 } } } },
      {},
      { cpu: { quota: 10000, period: 100000, shares: 102 } },
    ],
    ["shares alone", { linux: { resources: { cpu: { shares: 2 } } } }, {}, { cpu: { shares: 2 } }],
    [
      "the open-file limit: RLIMIT_NOFILE's soft value",
      {},
      {
        rlimits: [
          { type: "RLIMIT_CORE", hard: 0, soft: 0 },
          { type: "RLIMIT_NOFILE", hard: 4096, soft: 1024 },
        ],
      },
      { openFiles: 1024 },
    ],
  ];
  for (const [name, rest, process, want] of limits) {
    test(`limits: ${name}`, async () => {
      expect((await wasmPlan(b, spec(process, rest))).limits).toEqual(want);
    });
  }

  test("the network namespace: the spec's path, or none (no entry: the host's; one without a path: unnamed)", async () => {
    const ns = (namespaces: { type: string; path?: string }[]) => wasmPlan(b, spec({}, { linux: { namespaces } }));
    const named = await ns([{ type: "pid" }, { type: "network", path: "/var/run/netns/cni-1" }]);
    expect([named.netns, named.unnamedNetns]).toEqual(["/var/run/netns/cni-1", undefined]);
    const unnamed = await ns([{ type: "network" }]);
    expect([unnamed.netns, unnamed.unnamedNetns]).toEqual([undefined, true]);
    const host = await wasmPlan(b, spec());
    expect([host.netns, host.unnamedNetns]).toEqual([undefined, undefined]);
  });
});
