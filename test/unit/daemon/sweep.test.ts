// The sweep a daemon runs at start (src/daemon/sweep.ts): it cleans up the containers whose
// work dir a dead daemon of its own socket directory marked, and nothing else: not a live
// daemon's (one draining after a hand-over), not another directory's daemon's, not a
// normal-mode shim's (no mark). The runtime is a fake that logs its argv; the module's view is
// a real bind mount (root).
import { afterAll, afterEach, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { processStart } from "../../../src/daemon/daemon-files.ts";
import { type DaemonId, markWorkDir, Sweep, sweepDeadDaemons, thisDaemon } from "../../../src/daemon/sweep.ts";
import { viewDir } from "../../../src/oci/wasi-view.ts";
import { removingDir } from "../../../src/runtime-v2/paths.ts";

const base = mkdtempSync(join(tmpdir(), "bunwasi-sweep-"));
const saved = process.env.BUNWASI_RUNTIME;
afterEach(() => {
  if (saved === undefined) delete process.env.BUNWASI_RUNTIME;
  else process.env.BUNWASI_RUNTIME = saved;
});
afterAll(() => {
  for (const l of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const at = l.split(" ")[4];
    if (at?.startsWith(base)) Bun.spawnSync(["umount", "-l", at]);
  }
  rmSync(base, { recursive: true, force: true });
});

/** A process that has exited, as the daemon of `dir`. */
async function deadDaemon(dir: string): Promise<DaemonId> {
  const p = Bun.spawn(["sleep", "30"]);
  const started = processStart(p.pid) as string;
  p.kill("SIGKILL");
  await p.exited;
  return { dir, pid: p.pid, started };
}

test("only the containers of a dead daemon of this directory are cleaned up: runc's container, the view's mount, the work dir", async () => {
  const root = join(base, "scene");
  const stateRoot = join(root, "run");
  const socketDir = join(root, "d");
  const runtimeLog = join(root, "runc.log");
  const runtime = join(root, "runc");
  mkdirSync(root, { recursive: true });
  writeFileSync(runtime, `#!/bin/sh\necho "$*" >> ${runtimeLog}\n`);
  chmodSync(runtime, 0o755);
  process.env.BUNWASI_RUNTIME = runtime;
  const self = thisDaemon(join(socketDir, "wasmtimed.sock"));
  const dead = await deadDaemon(socketDir);
  // A pid alive but started at another time is another process now: dead for the sweep.
  const reused: DaemonId = { dir: socketDir, pid: process.ppid, started: "1" };
  const otherDir = await deadDaemon(join(root, "other"));

  const container = (ns: string, id: string, owner: DaemonId | null) => {
    const workDir = join(stateRoot, "state", ns, id);
    const bundle = join(root, "bundles", ns, id);
    mkdirSync(workDir, { recursive: true });
    mkdirSync(join(bundle, "rootfs"), { recursive: true });
    if (owner) markWorkDir(owner, { bundle, workDir });
    return { workDir, bundle };
  };
  const gone = container("ns1", "dead", dead);
  const gone2 = container("ns2", "reused", reused);
  const live = container("ns1", "live", self);
  const foreign = container("ns1", "foreign", otherDir);
  const normal = container("ns1", "normal", null);
  // The dead one's: a native container in runc's default root, and a wasm container's view mounted.
  mkdirSync(join(stateRoot, "runc", "ns1", "dead"), { recursive: true });
  const image = join(root, "image");
  mkdirSync(image);
  writeFileSync(join(image, "app.wasm"), "image");
  mkdirSync(viewDir(gone.workDir));
  expect(Bun.spawnSync(["mount", "--bind", "-o", "ro", image, viewDir(gone.workDir)]).exitCode).toBe(0);
  expect(Bun.spawnSync(["mount", "--bind", image, join(gone.bundle, "rootfs")]).exitCode).toBe(0);

  const logs: string[] = [];
  const r = await sweepDeadDaemons(self, stateRoot, (m) => logs.push(m));
  expect(logs).toEqual([]);
  expect(r).toEqual({ found: 2, failed: 0 });
  expect(existsSync(gone.workDir)).toBe(false);
  expect(existsSync(gone2.workDir)).toBe(false);
  expect(readFileSync(runtimeLog, "utf8")).toBe(`--root ${join(stateRoot, "runc", "ns1")} delete --force dead\n`);
  const table = readFileSync("/proc/self/mountinfo", "utf8");
  expect(table).not.toContain(gone.workDir);
  expect(table).not.toContain(gone.bundle);
  // Unmounted before the removal: nothing was removed through the view.
  expect(readFileSync(join(image, "app.wasm"), "utf8")).toBe("image");
  // The rest is untouched; ns2, emptied, is removed.
  for (const c of [live, foreign, normal]) expect(existsSync(c.workDir)).toBe(true);
  expect(existsSync(join(stateRoot, "state", "ns2"))).toBe(false);

  // A second start finds nothing more.
  expect(await sweepDeadDaemons(self, stateRoot, (m) => logs.push(m))).toEqual({ found: 0, failed: 0 });
});

test("no state root yet: nothing to sweep", async () => {
  const self = thisDaemon(join(base, "none", "wasmtimed.sock"));
  expect(await sweepDeadDaemons(self, join(base, "none", "run"), () => {})).toEqual({ found: 0, failed: 0 });
});

test("a Create of a container id being swept waits for its clean-up (settled); any other id does not", async () => {
  const root = join(base, "settled");
  const stateRoot = join(root, "run");
  const socketDir = join(root, "d");
  process.env.BUNWASI_RUNTIME = "/bin/true";
  const self = thisDaemon(join(socketDir, "wasmtimed.sock"));
  const workDir = join(stateRoot, "state", "ns1", "c1");
  markWorkDir(await deadDaemon(socketDir), { bundle: join(root, "bundle"), workDir });
  const sweep = new Sweep(stateRoot, () => {}, self);
  expect(sweep.found).toBe(1);
  const order: string[] = [];
  const waiting = sweep.settled("ns1", "c1").then(() => order.push(`settled: work dir ${existsSync(workDir) ? "kept" : "gone"}`));
  await sweep.settled("ns1", "other");
  order.push("other");
  await sweep.run();
  await waiting;
  expect(order).toEqual(["other", "settled: work dir gone"]);
  await sweep.settled("ns1", "c1");
});

test("a work dir a killed clean-up left with nothing but its owner's mark (removed last) is finished", async () => {
  const root = join(base, "half");
  const stateRoot = join(root, "run");
  const socketDir = join(root, "d");
  process.env.BUNWASI_RUNTIME = "/bin/true";
  const workDir = join(stateRoot, "state", "ns1", "c1");
  markWorkDir(await deadDaemon(socketDir), { bundle: join(root, "bundle"), workDir });
  expect(await sweepDeadDaemons(thisDaemon(join(socketDir, "wasmtimed.sock")), stateRoot, () => {})).toEqual({ found: 1, failed: 0 });
  expect(existsSync(join(stateRoot, "state", "ns1"))).toBe(false);
});

test("a work dir a killed clean-up renamed aside is removed once its remover is dead; a live remover's is left to it", async () => {
  const root = join(base, "aside");
  const stateRoot = join(root, "run");
  const ns = join(stateRoot, "state", "ns1");
  const gone = await deadDaemon(root);
  const dead = removingDir(join(ns, "c1"), gone.pid);
  const busy = removingDir(join(ns, "c2"), process.pid);
  for (const d of [dead, busy]) {
    mkdirSync(join(d, "run"), { recursive: true });
    writeFileSync(join(d, "run", "module.wasm"), "x");
  }
  const r = await sweepDeadDaemons(thisDaemon(join(root, "d", "wasmtimed.sock")), stateRoot, () => {});
  expect(r).toEqual({ found: 1, failed: 0 });
  expect(existsSync(dead)).toBe(false);
  expect(existsSync(busy)).toBe(true);
});
