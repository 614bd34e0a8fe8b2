// The plan's cases end to end, in both modes: the same table of `ctr run` calls through
// io.containerd.wasmtime.v1 (normal mode: the executor under runc) and
// io.containerd.wasmtimed.v1 (shared mode: the daemon this file starts), on each containerd
// (Debian's 1.6 and the pinned 2.x: test/support/containerd-versions.ts). Each row must give
// the same result in both modes and on both, because both modes run the one

// RunPlan (src/oci/container-plan.ts): entrypoint forms, symlinks out of the rootfs, #export,
// device nodes in the image and in a volume (EACCES: the view is nodev), volumes read-only and
// writable, a read-only root, and an image's env (LD_PRELOAD, BUN_OPTIONS, NODE_OPTIONS,
// BUNWASI_*) that is the module's and never the executor's. The plan builder's own table is
// test/unit/oci/container-plan.test.ts. Needs root, containerd and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { SMALL_VM_ENV } from "../../src/common/vm-env.ts";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { mountsUnder } from "../support/containerd.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { ctrTasks } from "../support/ctr-tasks.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "../support/daemon.ts";
import { IMAGES, REPO, RUNTIME, type ShimEnv, shimEnv, WASM } from "../support/shim-env.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 120_000;
const PLAN_IMAGE = "docker.io/library/bunwasi-plan-cases:latest";
/** What an image's env could try on the executor, were it the executor's. */
const HOSTILE_ENV = [
  "LD_PRELOAD=/nonexistent.so",
  "BUN_OPTIONS=--preload=/x.js",
  "NODE_OPTIONS=--require=/x.js",
  "BUNWASI_EXECUTOR_WORKER=1",
  "BUNWASI_WASMTIME_WORKER=/x.js",
];

const MODES = [
  { name: "normal mode", runtime: RUNTIME },
  { name: "shared mode", runtime: SHARED_RUNTIME },
] as const;

let seq = 0;
const uid = (what: string) => `pc-${what}-${process.pid}-${seq++}`;

// Every case on each containerd: one containerd and one daemon per version, both modes on it.
for (const c of CONTAINERDS) {
  describe(`containerd ${c.name}`, () => {
    let dir: string;
    let daemon: Daemon;
    let env: ShimEnv;

    beforeAll(async () => {
      dir = mkdtempSync("/tmp/bwpc-");
      // The daemon is started before shimEnv builds the shims: build them (all three) first.
      const built = Bun.spawnSync(["bash", join(REPO, "scripts/build-shim.sh")], { stdout: "pipe", stderr: "pipe" });
      if (built.exitCode !== 0) throw new Error(`build-shim.sh: ${built.stderr.toString()}`);
      daemon = await startDaemon(join(dir, "d"));
      // The containerd dir names the namespace: unique per run.
      env = await shimEnv({ binary: c.binary, env: daemon.env, dir: join(dir, basename(dir)) });
      const archive = join(dir, "plan-cases.tar");
      writeImageArchive(archive, {
        name: PLAN_IMAGE,
        files: [
          { path: "/escape.wasm", source: join(WASM, "escape.wasm") },
          { path: "/env.wasm", source: join(WASM, "env.wasm") },
          { path: "/wasi-demo-app.wasm", source: join(WASM, "wasi-demo-app.wasm") },
          { path: "/notes.txt", data: "in the image\n", mode: 0o644 },
          // /dev/null's numbers, where a module could name it: its view hides /dev, not this.
          { path: "/null", device: "char", major: 1, minor: 3, mode: 0o666 },
          { path: "/tmp", dir: true as const, mode: 0o1777 },
        ],
        config: { entrypoint: ["/escape.wasm"], env: ["PATH=/", ...HOSTILE_ENV] },
      });
      const r = await env.cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import ${archive}: ${r.stderr}`);
    }, 300_000);

    afterAll(async () => {
      const ns = env?.cd.namespace;
      await env?.stop();
      await daemon?.stop("SIGKILL");
      if (ns) for (const d of [runtimeRoot(ns), containerStateDir(ns)]) rmSync(d, { recursive: true, force: true });
      if (dir) {
        // Nothing of ours may be left mounted (a module's view in shared mode) before the removal.
        expect(mountsUnder(dir)).toEqual([]);
        rmSync(dir, { recursive: true, force: true });
      }
    }, T);

    /** A host directory holding `files`; a device node (1:3) if `node` is given. */
    function hostDir(name: string, files: Record<string, string> = {}, node?: string): string {
      const d = join(dir, name);
      mkdirSync(d, { recursive: true });
      for (const [f, text] of Object.entries(files)) writeFileSync(join(d, f), text);
      if (node) {
        const r = Bun.spawnSync(["mknod", join(d, node), "c", "1", "3"]);
        if (r.exitCode !== 0) throw new Error(`mknod: ${r.stderr.toString()}`);
      }
      return d;
    }

    for (const mode of MODES) {
      describe(`the plan's cases, ${mode.name}`, () => {
        const run = (image: string, args: string[], extra: string[] = []) =>
          env.run(image, uid("run"), args, { runtime: mode.runtime, extra });

        const forms: [string, string[], string[], string][] = [
          ["an absolute path", ["/env.wasm", "x"], [], "arg[0]=/env.wasm\narg[1]=x\n"],
          ["a bare name, found through the image's PATH", ["env.wasm"], [], "arg[0]=env.wasm\n"],
          ["a relative path, from the cwd", ["../env.wasm"], ["--cwd", "/bin"], "arg[0]=../env.wasm\n"],
          ["a symlink inside the rootfs", ["/bin/app.wasm", "y"], [], "arg[0]=/bin/app.wasm\narg[1]=y\n"],
        ];
        for (const [name, args, extra, head] of forms) {
          test(
            `entrypoint: ${name}`,
            async () => {
              const r = await run(IMAGES.tools, args, extra);
              expect({ code: r.code, err: r.stderr }).toEqual({ code: 0, err: "" });
              expect(r.stdout.startsWith(head)).toBe(true);
            },
            T,
          );
        }

        test(
          "entrypoint: a symlink pointing out of the rootfs stops at its / (not the host's runc)",
          async () => {
            const r = await run(IMAGES.tools, ["/evil.wasm"]);
            expect(r.code).not.toBe(0);
            expect(r.stderr).toContain("/evil.wasm: no such file in the container's rootfs");
          },
          T,
        );

        test(
          "entrypoint: module.wasm#export calls that export",
          async () => {
            // funcs.wat: _start exits 1, `other` exits 7.
            expect((await run(IMAGES.tools, ["/funcs.wasm#other"])).code).toBe(7);
            expect((await run(IMAGES.tools, ["/funcs.wasm"])).code).toBe(1);
          },
          T,
        );

        test(
          "a device node in the image is refused (EACCES), the image's files are read",
          async () => {
            const r = await run(PLAN_IMAGE, ["/escape.wasm", "/null", "/notes.txt", "/dev/null", "/proc/self/environ"]);
            expect({ code: r.code, err: r.stderr }).toEqual({ code: 0, err: "" });
            expect(r.stdout).toBe(
              [
                "/null: error Permission denied",
                "/notes.txt: ok in the image",
                // The kernel's views are not in a module's view at all.
                "/dev/null: error No such file or directory",
                "/proc/self/environ: error No such file or directory",
                "",
              ].join("\n"),
            );
          },
          T,
        );

        test(
          "a device node in a volume is refused too; its files are read",
          async () => {
            const vol = hostDir(`dev-vol-${mode.runtime}`, { "f.txt": "in the volume\n" }, "null");
            const r = await run(
              PLAN_IMAGE,
              ["/escape.wasm", "/vol/null", "/vol/f.txt"],
              ["--mount", `type=bind,src=${vol},dst=/vol,options=rbind:rw`],
            );
            expect({ code: r.code, err: r.stderr }).toEqual({ code: 0, err: "" });
            expect(r.stdout).toBe("/vol/null: error Permission denied\n/vol/f.txt: ok in the volume\n");
          },
          T,
        );

        test(
          "volumes: a read-only one refuses writes, a writable one takes them (on the host)",
          async () => {
            const ro = hostDir(`ro-${mode.runtime}`, { "in.txt": "from the host\n" });
            const rw = hostDir(`rw-${mode.runtime}`);
            const roMount = ["--mount", `type=bind,src=${ro},dst=/data,options=rbind:ro`];
            const read = await run(IMAGES.tools, ["/escape.wasm", "/data/in.txt"], roMount);
            expect(read.stdout).toBe("/data/in.txt: ok from the host\n");
            const denied = await run(IMAGES.tools, ["/wasi-demo-app.wasm", "write", "/data/new.txt", "x"], roMount);
            expect(denied.code).toBe(1);
            expect(existsSync(join(ro, "new.txt"))).toBe(false);
            const wrote = await run(
              IMAGES.tools,
              ["/wasi-demo-app.wasm", "write", "/out/new.txt", "written"],
              ["--mount", `type=bind,src=${rw},dst=/out,options=rbind:rw`],
            );
            expect({ code: wrote.code, err: wrote.stderr }).toEqual({ code: 0, err: "" });
            expect(readFileSync(join(rw, "new.txt"), "utf8")).toBe("written");
          },
          T,
        );

        test(
          "a read-only root refuses writes; a writable one takes them",
          async () => {
            const ro = await run(IMAGES.tools, ["/wasi-demo-app.wasm", "write", "/tmp/x.txt", "x"], ["--read-only"]);
            expect(ro.code).toBe(1);
            const rw = await run(IMAGES.tools, ["/wasi-demo-app.wasm", "write", "/tmp/x.txt", "x"]);
            expect({ code: rw.code, err: rw.stderr }).toEqual({ code: 0, err: "" });
          },
          T,
        );

        test(
          "the image's env (LD_PRELOAD, BUN_OPTIONS, NODE_OPTIONS, BUNWASI_*) and --env are the module's, the last of a key winning",
          async () => {
            const r = await run(PLAN_IMAGE, ["/escape.wasm"], ["--env", "G=1", "--env", "G=2"]);
            expect(r.code).toBe(0);
            // Had the executor (or the loader starting it) taken LD_PRELOAD, the loader would say so here.
            expect(r.stderr).toBe("");
            const e = await run(
              IMAGES.tools,
              ["/env.wasm"],
              [...HOSTILE_ENV.flatMap((kv) => ["--env", kv]), "--env", "G=1", "--env", "G=2"],
            );
            expect({ code: e.code, err: e.stderr }).toEqual({ code: 0, err: "" });
            const envs = e.stdout
              .split("\n")
              .filter((l) => l.startsWith("env:"))
              .map((l) => l.slice(4));
            for (const kv of HOSTILE_ENV) expect(envs).toContain(kv);
            expect(envs.filter((kv) => kv.startsWith("G="))).toEqual(["G=2"]);
            // Nothing of the executor's own settings reaches the module.
            for (const k of Object.keys(SMALL_VM_ENV)) expect(envs.some((kv) => kv.startsWith(`${k}=`))).toBe(false);
          },
          T,
        );
      });
    }

    describe("the executor's own environment (normal mode)", () => {
      const t = ctrTasks(
        () => env.cd,
        () => dir,
      );
      test(
        "is its VM settings only, for the container's and for an exec's: an image's LD_PRELOAD, BUN_OPTIONS, NODE_OPTIONS and BUNWASI_* never reach it",
        async () => {
          const id = uid("environ");
          const log = await t.runDetached(
            id,
            ["/wasi-demo-app.wasm", "daemon"],
            PLAN_IMAGE,
            RUNTIME,
            HOSTILE_ENV.flatMap((kv) => ["--env", kv]),
          );
          try {
            await t.waitStatus(id, "RUNNING");
            const pid = (await t.tasks()).get(id)?.pid ?? 0;
            expect(pid).toBeGreaterThan(0);
            const environ = readFileSync(`/proc/${pid}/environ`, "latin1").split("\0").filter(Boolean);
            // runc adds HOME (the user's) to a process that has none; the rest is ours.
            expect(environ.filter((e) => !e.startsWith("HOME=")).sort()).toEqual(
              Object.entries(SMALL_VM_ENV)
                .map(([k, v]) => `${k}=${v}`)
                .sort(),
            );
            // The executor itself: our loader running our binary, not something the image chose.
            expect(readFileSync(`/proc/${pid}/cmdline`, "latin1")).toContain("--plan");
            // An exec of a module (ctr gives it the container's env) runs on a plan of its own:
            // the env is the module's, and the loader starting the executor never saw LD_PRELOAD.
            const e = await env.cd.ctr(["task", "exec", "--exec-id", "e-env", id, "/env.wasm", "x"], { timeoutMs: 60_000 });
            expect({ code: e.code, err: e.stderr }).toEqual({ code: 0, err: "" });
            expect(e.stdout).toContain("arg[1]=x\n");
            for (const kv of HOSTILE_ENV) expect(e.stdout).toContain(`env:${kv}\n`);
          } finally {
            await t.ctrOk(["task", "kill", "-s", "SIGKILL", id]);
            await t.waitStatus(id, "STOPPED");
            await t.deleteTask(id);
            await t.ctrOk(["containers", "delete", id]);
          }
          expect(readFileSync(log, "utf8")).toContain("This is a song");
        },
        T,
      );
    });
  });
}
