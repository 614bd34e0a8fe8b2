// `shim delete` after a server died: it must ask the runtime that created the container,
// which a Create's runtime options may have changed (another binary, another root). Fake
// runtimes here are shell scripts that log their argv; no containerd, no runc.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mountView, viewDir } from "../../../src/oci/wasi-view.ts";
import { deleteResponse, deleteTask, killedResponse, rootfsMounted } from "../../../src/runtime-v2/delete.ts";
import { parseShimFlags } from "../../../src/runtime-v2/flags.ts";
import { timestamp } from "../../../src/task/events.ts";
import { DeleteResponse } from "../../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { RUNTIME_OPTIONS_FILE, saveRuntimeOptions } from "../../../src/task/runtime-options.ts";

const base = mkdtempSync(join(tmpdir(), "bunwasi-delete-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

const saved = { state: process.env.BUNWASI_STATE_ROOT, runtime: process.env.BUNWASI_RUNTIME };
afterEach(() => {
  for (const [k, v] of [
    ["BUNWASI_STATE_ROOT", saved.state],
    ["BUNWASI_RUNTIME", saved.runtime],
  ] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

/** A runtime that appends its argv to `<name>.log` and succeeds. */
function fakeRuntime(dir: string, name: string): { path: string; calls: () => string[] } {
  const path = join(dir, name);
  const log = `${path}.log`;
  writeFileSync(path, `#!/bin/sh\necho "$*" >> ${log}\n`);
  chmodSync(path, 0o755);
  return { path, calls: () => (existsSync(log) ? readFileSync(log, "utf8").trim().split("\n") : []) };
}

/** A state root with container `id` of namespace `ns` created (its work dir, its runtime state dir under `runtimeRoot`). */
function scene(name: string) {
  const dir = join(base, name);
  const stateRoot = join(dir, "run");
  const bundle = join(dir, "bundle");
  mkdirSync(bundle, { recursive: true });
  process.env.BUNWASI_STATE_ROOT = stateRoot;
  const fallback = fakeRuntime(dir, "default-runc");
  process.env.BUNWASI_RUNTIME = fallback.path;
  const workDir = join(stateRoot, "state", "ns1", "c1");
  mkdirSync(workDir, { recursive: true });
  const flags = parseShimFlags(["-namespace", "ns1", "-address", "/c.sock", "-id", "c1", "-bundle", bundle, "delete"]);
  return { dir, stateRoot, workDir, flags, fallback };
}

describe("shim delete", () => {
  test("a container created with runtime options (BinaryName, Root) is deleted by that binary under that root", async () => {
    const s = scene("options");
    const alt = fakeRuntime(s.dir, "wrapped-runc");
    const root = join(s.dir, "alt-root");
    await saveRuntimeOptions(s.workDir, { binaryName: alt.path, root, systemdCgroup: true });
    // runc-v2's layout: the namespace is appended to Root; the container's state is in there.
    mkdirSync(join(root, "ns1", "c1"), { recursive: true });
    const warnings: string[] = [];
    await deleteTask(s.flags, (m) => warnings.push(m));
    expect(alt.calls()).toEqual([`--root ${join(root, "ns1")} --systemd-cgroup delete --force c1`]);
    expect(s.fallback.calls()).toEqual([]);
    expect(warnings).toEqual([]);
    // The options go with the work directory, and the namespace's empty folders of ours too.
    expect(existsSync(s.workDir)).toBe(false);
    expect(existsSync(join(s.stateRoot, "state", "ns1"))).toBe(false);
  });

  test("a module's view the shared-mode daemon left mounted in the work dir is taken down before the dir goes (root)", async () => {
    const s = scene("view");
    const rootfs = join(s.dir, "rootfs");
    const vol = join(s.dir, "vol");
    mkdirSync(rootfs);
    mkdirSync(vol);
    writeFileSync(join(rootfs, "app.wasm"), "image");
    writeFileSync(join(vol, "data"), "volume");
    mountView({ root: rootfs, readOnly: false, volumes: [{ source: vol, destination: "/data", readOnly: false }] }, viewDir(s.workDir));
    const warnings: string[] = [];
    await deleteTask(s.flags, (m) => warnings.push(m));
    expect(warnings).toEqual([]);
    expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(s.workDir);
    expect(existsSync(s.workDir)).toBe(false);
    // Removed after the unmount: nothing of the rootfs or the volume was removed through the view.
    expect(readFileSync(join(rootfs, "app.wasm"), "utf8")).toBe("image");
    expect(readFileSync(join(vol, "data"), "utf8")).toBe("volume");
  });

  test("without options the default binary and root are used", async () => {
    const s = scene("defaults");
    mkdirSync(join(s.stateRoot, "runc", "ns1", "c1"), { recursive: true });
    // Another container of the namespace keeps its folder.
    mkdirSync(join(s.stateRoot, "state", "ns1", "c2"));
    await deleteTask(s.flags, () => {});
    expect(s.fallback.calls()).toEqual([`--root ${join(s.stateRoot, "runc", "ns1")} delete --force c1`]);
    expect(existsSync(s.workDir)).toBe(false);
    expect(existsSync(join(s.stateRoot, "state", "ns1", "c2"))).toBe(true);
  });

  test("an unreadable options file is said, and the default runtime is asked", async () => {
    const s = scene("corrupt");
    writeFileSync(join(s.workDir, RUNTIME_OPTIONS_FILE), "{half");
    mkdirSync(join(s.stateRoot, "runc", "ns1", "c1"), { recursive: true });
    const warnings: string[] = [];
    await deleteTask(s.flags, (m) => warnings.push(m));
    expect(warnings).toEqual([`runtime options: ${join(s.workDir, RUNTIME_OPTIONS_FILE)}: not JSON; using the default runtime`]);
    expect(s.fallback.calls()).toEqual([`--root ${join(s.stateRoot, "runc", "ns1")} delete --force c1`]);
    expect(existsSync(s.workDir)).toBe(false);
  });

  test("after a server that cleaned up: no runtime is asked, and the answer is a kill, now", async () => {
    const s = scene("clean");
    rmSync(s.workDir, { recursive: true });
    const warnings: string[] = [];
    const before = Date.now();
    const out = DeleteResponse.decode(await deleteTask(s.flags, (m) => warnings.push(m)));
    expect(s.fallback.calls()).toEqual([]);
    expect(warnings).toEqual([]);
    expect(out.pid).toBe(0);
    expect(out.exitStatus).toBe(137);
    const at = Number(out.exitedAt?.seconds) * 1000 + (out.exitedAt?.nanos ?? 0) / 1e6;
    expect(at).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(at).toBeLessThanOrEqual(Date.now());
    // The namespace's empty folder of ours goes too.
    expect(existsSync(join(s.stateRoot, "state", "ns1"))).toBe(false);
  });
});

describe("is the rootfs still mounted? (the mount table only when the directory cannot tell)", () => {
  /** A bundle with a rootfs directory, and a mount table reader that counts its reads. */
  function bundleScene(name: string) {
    const bundle = join(base, "rootfs-check", name);
    mkdirSync(join(bundle, "rootfs"), { recursive: true });
    const reads = { n: 0 };
    const table = () => {
      reads.n++;
      return readFileSync("/proc/self/mountinfo", "utf8");
    };
    return { bundle, rootfs: join(bundle, "rootfs"), reads, table };
  }
  const mount = (...args: string[]) => {
    const r = Bun.spawnSync(["mount", ...args]);
    if (r.exitCode !== 0) throw new Error(`mount ${args.join(" ")}: ${r.stderr.toString()}`);
  };
  const umount = (path: string) => Bun.spawnSync(["umount", "-l", path]);

  test("the server unmounted it (an empty directory on the bundle's device): no, without reading the table", () => {
    const s = bundleScene("empty");
    expect(rootfsMounted(s.bundle, s.table)).toBe(false);
    expect(s.reads.n).toBe(0);
  });

  test("no rootfs directory at all: no, without reading the table", () => {
    const s = bundleScene("none");
    rmSync(s.rootfs, { recursive: true });
    expect(rootfsMounted(s.bundle, s.table)).toBe(false);
    expect(s.reads.n).toBe(0);
  });

  test("another filesystem mounted on it (as an overlay is): yes, without reading the table (root)", () => {
    const s = bundleScene("tmpfs");
    mount("-t", "tmpfs", "tmpfs", s.rootfs);
    try {
      expect(rootfsMounted(s.bundle, s.table)).toBe(true);
      expect(s.reads.n).toBe(0);
    } finally {
      umount(s.rootfs);
    }
  });

  test("a directory of the bundle's own filesystem bound on it: the table decides, yes (root)", () => {
    const s = bundleScene("bind");
    const image = join(base, "rootfs-check", "bind-image");
    mkdirSync(image, { recursive: true });
    writeFileSync(join(image, "app.wasm"), "image");
    mount("--bind", image, s.rootfs);
    try {
      expect(rootfsMounted(s.bundle, s.table)).toBe(true);
      expect(s.reads.n).toBe(1);
    } finally {
      umount(s.rootfs);
    }
  });

  test("files in it but nothing mounted: the table decides, no", () => {
    const s = bundleScene("files");
    writeFileSync(join(s.rootfs, "left"), "x");
    expect(rootfsMounted(s.bundle, s.table)).toBe(false);
    expect(s.reads.n).toBe(1);
  });

  test("shim delete after a server died with the rootfs mounted and no work dir: it is unmounted (root)", async () => {
    const s = scene("mounted-rootfs");
    rmSync(s.workDir, { recursive: true });
    const bundle = s.flags.bundle;
    mkdirSync(join(bundle, "rootfs"), { recursive: true });
    mount("-t", "tmpfs", "tmpfs", join(bundle, "rootfs"));
    try {
      const warnings: string[] = [];
      await deleteTask(s.flags, (m) => warnings.push(m));
      expect(warnings).toEqual([]);
      expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(join(bundle, "rootfs"));
      // Nothing was created for the runtime to delete: it is not asked.
      expect(s.fallback.calls()).toEqual([]);
    } finally {
      umount(join(bundle, "rootfs"));
    }
  });
});

test("the hand-written DeleteResponse is the generated code's, byte for byte", () => {
  for (const now of [1_780_000_000_000, 1_780_000_000_123, 1_000, 999]) {
    const want = DeleteResponse.encode({ pid: 0, exitStatus: 137, exitedAt: timestamp(new Date(now)) }).finish();
    expect(killedResponse(now)).toEqual(want);
  }
});

test("the hand-written DeleteResponse of an exit the daemon saw is the generated code's, byte for byte", () => {
  for (const [pid, exitStatus, seconds, nanos] of [
    [4242, 3, 1_700_000_000, 5],
    [1, 0, 1_700_000_000, 0],
    [0, 255, 0, 0],
    [2 ** 22 + 1, 137, 2 ** 33, 999_999_999],
  ] as const) {
    const want = DeleteResponse.encode({ pid, exitStatus, exitedAt: { seconds, nanos } }).finish();
    expect(deleteResponse({ pid, exitStatus, exitedAt: { seconds, nanos } })).toEqual(want);
  }
});
