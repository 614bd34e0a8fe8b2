// What a dead server or a failed Create leaves behind: nothing. Against the real containerd
// (Debian's 1.6), real runc and the compiled shim. Needs root (CI is root).
//
// - A server killed (SIGKILL) under a running container: containerd runs `shim delete`, which
//   must clean up as the server would have. The container was created with runtime options
//   (ctr's --runtime-config-path: CRI's runtimeoptions.v1.Options with a TOML file) naming
//   another runc binary (a wrapper that logs its calls) and another state root, so the
//   default runtime would not find it.
// - A Create whose runtime fails after it made the container (a wrapper that runs the real
//   create, then fails), while the module (new to the compile cache) compiles beside it: no
//   runc container, mount, cgroup or state dir is left, and the cache holds the whole
//   artifact and no tmp file.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeImageArchive } from "../../tools/image/index.ts";
import { type Containerd, mountsUnder } from "../support/containerd.ts";
import { ctrTasks, fileText, sleep } from "../support/ctr-tasks.ts";
import { RUNTIME, type ShimEnv, shimEnv, WASM } from "../support/shim-env.ts";

const RUNC = ["/usr/sbin/runc", "/usr/bin/runc"].find((p) => existsSync(p));
const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && existsSync("/usr/bin/ctr") && RUNC !== undefined;
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const STATE_ROOT = process.env.BUNWASI_STATE_ROOT || "/run/bunwasi";
const CACHE = join(process.env.BUNWASI_EXEC_ROOT || "/var/lib/bunwasi", "cache");
const T = 60_000;

/** Container cgroup directories of process `pid` (v1: one per hierarchy; v2: one), as absolute paths. */
function cgroupDirsOf(pid: number): string[] {
  const out: string[] = [];
  for (const line of readFileSync(`/proc/${pid}/cgroup`, "utf8").trim().split("\n")) {
    const [, controllers, path] = line.split(":");
    if (path === undefined || path === "/") continue;
    if (controllers === "") out.push(join("/sys/fs/cgroup", path));
    else if (controllers?.startsWith("name=")) out.push(join("/sys/fs/cgroup", controllers.slice(5), path));
    else for (const c of (controllers ?? "").split(",")) out.push(join("/sys/fs/cgroup", c, path));
  }
  // A controller mounted under a combined name (cpu,cpuacct) is reached through its symlinks.
  return out.filter((d) => existsSync(join(d, "..")));
}

describe("nothing left behind (ctr + containerd 1.6 + compiled shim)", () => {
  let env: ShimEnv;
  let cd: Containerd;
  let ns: string;
  /** Runtime roots of the tests' own, and the ids created under them. */
  const roots: { root: string; id: string }[] = [];

  beforeAll(async () => {
    env = await shimEnv();
    cd = env.cd;
    ns = cd.namespace;
  }, 240_000);

  afterAll(async () => {
    // Whatever the test left under its own root (a failure): the harness knows only the default one.
    for (const { root, id } of roots) {
      if (RUNC && existsSync(join(root, ns, id))) Bun.spawnSync([RUNC, "--root", join(root, ns), "delete", "--force", id]);
    }
    await env?.stop();
  }, T);

  const { ctrOk, tasks, waitStatus } = ctrTasks(
    () => cd,
    () => env.dir,
  );

  test(
    "a container created with runtime options (BinaryName, Root) is deleted by that runtime under that root",
    async () => {
      const id = "crash-opts";
      const dir = join(env.dir, "opts");
      mkdirSync(dir, { recursive: true });
      const altRoot = join(dir, "root");
      roots.push({ root: altRoot, id });
      const calls = join(dir, "runc-calls.log");
      const wrapper = join(dir, "logging-runc");
      writeFileSync(wrapper, `#!/bin/sh\necho "$*" >> ${calls}\nexec ${RUNC} "$@"\n`);
      chmodSync(wrapper, 0o755);
      const toml = join(dir, "options.toml");
      writeFileSync(toml, `BinaryName = "${wrapper}"\nRoot = "${altRoot}"\n`);
      const log = join(env.dir, `${id}.log`);
      await ctrOk([
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        toml,
        "--log-uri",
        `file://${log}`,
        "docker.io/library/wasi-demo-app:latest",
        id,
      ]);
      await waitStatus(id, "RUNNING");

      // Created by the wrapper under Root/<namespace> (runc-v2's layout), not under the default root.
      const runcState = join(altRoot, ns, id);
      expect(existsSync(join(runcState, "state.json"))).toBe(true);
      expect(existsSync(join(STATE_ROOT, "runc", ns, id))).toBe(false);
      expect(fileText(calls)).toContain(`create --bundle`);
      const bundle = join(cd.state, "io.containerd.runtime.v2.task", ns, id);
      const workDir = join(STATE_ROOT, "state", ns, id);
      expect(existsSync(workDir)).toBe(true);
      const init = (await tasks()).get(id)?.pid ?? 0;
      expect(init).toBeGreaterThan(0);
      const cgroups = cgroupDirsOf(init);
      expect(cgroups.length).toBeGreaterThan(0);
      expect(mountsUnder(bundle).length).toBeGreaterThan(0);

      const server = Number(readFileSync(join(bundle, "shim.pid"), "utf8"));
      process.kill(server, "SIGKILL");
      // containerd sees the connection close and runs `shim delete`, which must ask the
      // wrapper under that root. Waited for (bounded): runc's delete kills the container first.
      const deadline = Date.now() + 30_000;
      while (existsSync(runcState) && Date.now() < deadline) await sleep(50);
      expect(fileText(calls)).toContain(`--root ${join(altRoot, ns)} delete --force ${id}`);

      // What an operator does afterwards; containerd may already have dropped the task.
      await cd.ctr(["task", "delete", id]);
      await ctrOk(["container", "rm", id]);
      expect((await tasks()).has(id)).toBe(false);

      // Nothing left: runc's state, the container's processes and cgroups, mounts, our work dir.
      expect(existsSync(runcState)).toBe(false);
      // The killed init is reaped by whoever it was re-parented to (containerd): bounded wait.
      const initLeft = () => existsSync(`/proc/${init}/cgroup`) && fileText(`/proc/${init}/cgroup`).includes(`/${id}`);
      const reaped = Date.now() + 30_000; // liveness only
      while (initLeft() && Date.now() < reaped) await sleep(50);
      expect(initLeft()).toBe(false);
      expect(cgroups.filter((d) => existsSync(d))).toEqual([]);
      expect(mountsUnder(bundle)).toEqual([]);
      expect(existsSync(workDir)).toBe(false);
      // The namespace's folders of ours went with its last container, as a server's exit does it.
      expect(existsSync(join(STATE_ROOT, "state", ns))).toBe(false);
      expect(existsSync(join(STATE_ROOT, "runc", ns))).toBe(false);
      expect(existsSync(bundle) ? readdirSync(bundle) : []).toEqual([]);
    },
    T,
  );
  test(
    "a Create whose runtime fails after making the container leaves nothing, and the cache a whole artifact",
    async () => {
      const id = "failed-create";
      const dir = join(env.dir, "failing");
      mkdirSync(dir, { recursive: true });
      const root = join(dir, "root");
      roots.push({ root, id });
      const calls = join(dir, "runc-calls.log");
      const wrapper = join(dir, "failing-runc");
      // The real create, then a failure: the runtime holds a container the shim must remove.
      writeFileSync(
        wrapper,
        `#!/bin/sh\necho "$*" >> ${calls}\ncase " $* " in *" create "*) ${RUNC} "$@"; exit 1;; esac\nexec ${RUNC} "$@"\n`,
      );
      chmodSync(wrapper, 0o755);
      const toml = join(dir, "options.toml");
      writeFileSync(toml, `BinaryName = "${wrapper}"\nRoot = "${root}"\n`);
      // A module no earlier run compiled: the demo app with a custom section holding a nonce.
      const nonce = new TextEncoder().encode(`${process.pid}-${Date.now()}-${Math.random()}`);
      const name = new TextEncoder().encode("bunwasi-nonce");
      const payload = [name.length, ...name, ...nonce];
      const module = new Uint8Array([...readFileSync(join(WASM, "wasi-demo-app.wasm")), 0, payload.length, ...payload]);
      expect(payload.length).toBeLessThan(128); // one LEB128 byte
      const digest = new Bun.CryptoHasher("sha256").update(module).digest("hex");
      const image = "docker.io/library/bunwasi-nonce:latest";
      const archive = join(dir, "nonce.tar");
      writeImageArchive(archive, { name: image, files: [{ path: "/app.wasm", data: module }], config: { entrypoint: ["/app.wasm"] } });
      await ctrOk(["images", "import", archive]);
      const cached = () => (existsSync(CACHE) ? readdirSync(CACHE).filter((f) => f.startsWith(digest)) : []);
      expect(cached()).toEqual([]);

      const r = await cd.ctr(["run", "--runtime", RUNTIME, "--runtime-config-path", toml, image, id], { timeoutMs: 30_000 });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain("failing-runc create");
      // The shim removed what the runtime made, through the same runtime and root.
      expect(fileText(calls)).toContain(`--root ${join(root, ns)} delete --force ${id}`);
      await cd.ctr(["container", "rm", id]);

      expect(existsSync(join(root, ns, id))).toBe(false);
      expect(mountsUnder(join(cd.state, "io.containerd.runtime.v2.task", ns, id))).toEqual([]);
      expect(existsSync(join(STATE_ROOT, "state", ns, id))).toBe(false);
      // The namespace's folders of ours go with the server, which containerd stops after the
      // failure (bounded wait: its exit is asynchronous).
      const nsDirs = [join(STATE_ROOT, "state", ns), join(STATE_ROOT, "runc", ns)];
      const gone = Date.now() + 30_000; // liveness only
      while (nsDirs.some((d) => existsSync(d)) && Date.now() < gone) await sleep(50);
      expect(nsDirs.filter((d) => existsSync(d))).toEqual([]);
      const cgroups = readdirSync("/sys/fs/cgroup").flatMap((c) => [join("/sys/fs/cgroup", c, ns, id), join("/sys/fs/cgroup", ns, id)]);
      expect(cgroups.filter((d) => existsSync(d))).toEqual([]);
      // The compile before the failed create finished before the answer: its entry is whole
      // (the artifact and its MAC, no tmp file), though the server was told to stop right after.
      const left = cached();
      expect(left.map((f) => f.slice(f.lastIndexOf("."))).sort()).toEqual([".cwasm", ".mac"]);
      for (const f of left) rmSync(join(CACHE, f), { force: true });
    },
    T,
  );

  test(
    "a failed Create whose runtime delete fails too: the next `shim delete` retries it through the same runtime, and nothing is left",
    async () => {
      const id = "failed-create-delete";
      const dir = join(env.dir, "failing-delete");
      mkdirSync(dir, { recursive: true });
      const root = join(dir, "root");
      roots.push({ root, id });
      const calls = join(dir, "runc-calls.log");
      const once = join(dir, "delete-failed-once");
      const wrapper = join(dir, "failing-runc");
      // The real create, then a failure; the first delete (the server undoing its Create)
      // fails too, so the runtime still holds the container when the Create is answered.
      writeFileSync(
        wrapper,
        `#!/bin/sh\necho "$*" >> ${calls}\ncase " $* " in\n` +
          `  *" create "*) ${RUNC} "$@"; exit 1;;\n` +
          `  *" delete "*) if [ ! -e ${once} ]; then : > ${once}; echo "delete: device or resource busy" >&2; exit 1; fi;;\n` +
          `esac\nexec ${RUNC} "$@"\n`,
      );
      chmodSync(wrapper, 0o755);
      const toml = join(dir, "options.toml");
      writeFileSync(toml, `BinaryName = "${wrapper}"\nRoot = "${root}"\n`);

      const r = await cd.ctr(["run", "--runtime", RUNTIME, "--runtime-config-path", toml, "docker.io/library/wasi-demo-app:latest", id], {
        timeoutMs: 30_000,
      });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain("failing-runc create");
      await cd.ctr(["container", "rm", id]);
      const deleteCall = `--root ${join(root, ns)} delete --force ${id}`;
      // containerd runs `shim delete` once the server is gone: it must find the runtime the
      // Create used (its options were kept in the work dir for this) and delete through it.
      // Bounded wait: the server's exit and containerd's clean-up are asynchronous.
      const runcState = join(root, ns, id);
      const workDir = join(STATE_ROOT, "state", ns, id);
      const done = Date.now() + 30_000; // liveness only
      while ((existsSync(runcState) || existsSync(workDir)) && Date.now() < done) await sleep(50);
      expect(
        fileText(calls)
          .split("\n")
          .filter((l) => l === deleteCall),
      ).toHaveLength(2);
      expect(existsSync(runcState)).toBe(false);
      expect(existsSync(workDir)).toBe(false);
      expect(mountsUnder(join(cd.state, "io.containerd.runtime.v2.task", ns, id))).toEqual([]);
      const nsDirs = [join(STATE_ROOT, "state", ns), join(STATE_ROOT, "runc", ns)];
      const gone = Date.now() + 30_000; // liveness only
      while (nsDirs.some((d) => existsSync(d)) && Date.now() < gone) await sleep(50);
      expect(nsDirs.filter((d) => existsSync(d))).toEqual([]);
      const cgroups = readdirSync("/sys/fs/cgroup").flatMap((c) => [join("/sys/fs/cgroup", c, ns, id), join("/sys/fs/cgroup", ns, id)]);
      expect(cgroups.filter((d) => existsSync(d))).toEqual([]);
    },
    T,
  );
});
