// `ctr run` through the real containerd (1.6) and the compiled shim, in both modes: normal
// (containerd-shim-wasmtime-v1, a shim server per pod and an executor per container) and
// shared (containerd-shim-wasmtimed-v1 and the containerd-wasmtimed daemon this file starts,
// wasm run in-process). What a user sees of a
// container run end to end — output, exit codes, env and args, files and isolation, stdin,
// big outputs, native containers through the same runtime, and clear errors after which the
// shim keeps serving. The last test drives the shim binary directly (start/Create/Shutdown/
// delete) for a broken config.json, which ctr cannot produce. Needs root, containerd and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { socketPath } from "../../src/runtime-v2/address.ts";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { CreateTaskRequest, DeleteResponse, TaskDefinition } from "../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Client, TtrpcError } from "../../src/ttrpc/index.ts";
import { feed, mountsUnder, processesUsing } from "../support/containerd.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "../support/daemon.ts";
import { IMAGES, REPO, RUNTIME, type ShimEnv, shimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");

// Stated as a test so that a machine without them fails loudly instead of skipping.
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));
const T = 60_000;
/** The two ways to run: per-pod shim servers, or one daemon (shared mode). */
const MODES = [
  { name: "normal", runtime: RUNTIME, shim: join(REPO, "build/bin/containerd-shim-wasmtime-v1"), shared: false },
  { name: "shared", runtime: SHARED_RUNTIME, shim: join(REPO, "build/bin/containerd-shim-wasmtimed-v1"), shared: true },
] as const;
const CANARY = `canary-${process.pid}`;

let seq = 0;
/** A container id unique in this run (and readable in containerd's log). */
const uid = (what: string) => `run-${what}-${process.pid}-${seq++}`;

/** When this file began: every exit time it sees is from later (and not later than now). */
const FILE_START_MS = Date.now();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.each(MODES.map((m) => [m.name, m] as const))("ctr run, %s mode", (_name, mode) => {
  let env: ShimEnv;
  let daemon: Daemon | undefined;
  let daemonDir = "";
  const SHIM = mode.shim;
  const RUNTIME = mode.runtime;

  beforeAll(async () => {
    // containerd, and so every shim and runc, inherit this; a container must not.
    process.env.SHIMRUN_LEAK_CANARY = CANARY;
    if (mode.shared) {
      daemonDir = mkdtempSync("/tmp/bwd-");
      daemon = await startDaemon(daemonDir);
    }
    const base = await shimEnv(daemon ? { env: daemon.env } : {});
    // Every `env.run` of this mode goes to its runtime.
    env = { ...base, run: (image, id, args, o = {}) => base.run(image, id, args, { runtime: RUNTIME, ...o }) };
  }, 300_000);
  afterAll(async () => {
    if (!env) return;
    const ns = env.cd.namespace;
    await env.stop();
    if (daemon) {
      await daemon.stop("SIGKILL");
      rmSync(daemonDir, { recursive: true, force: true });
    }
    // The shim keeps per-namespace dirs (runc root, container state) that outlive containerd.
    for (const d of [runtimeRoot(ns), containerStateDir(ns)]) rmSync(d, { recursive: true, force: true });
  }, T);

  /** Nothing of container `id` is left: no container, no task, no shim process. */
  async function expectGone(id: string): Promise<void> {
    const containers = await env.cd.ctr(["containers", "ls", "-q"]);
    expect(containers.stdout.split("\n")).not.toContain(id);
    const tasks = await env.cd.ctr(["tasks", "ls", "-q"]);
    expect(tasks.stdout.split("\n")).not.toContain(id);
    // containerd shuts the shim down after Delete; it exits shortly after answering.
    await until(`shim of ${id} to exit`, () => !processesUsing(env.dir).some((p) => p.cmdline.includes(` -id ${id} `)));
    // Nothing mounted or kept for it: rootfs unmounted, the shim's per-container state removed.
    expect(mountsUnder(env.dir).filter((m) => m.includes(`/${id}/`) || m.endsWith(`/${id}`))).toEqual([]);
    expect(existsSync(join(containerStateDir(env.cd.namespace), id))).toBe(false);
  }

  /** The shim still serves new containers: an echo runs cleanly. */
  async function expectEchoWorks(): Promise<void> {
    const r = await env.run(IMAGES.demo, uid("after"), ["/wasi-demo-app.wasm", "echo", "still", "serving"]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("still serving\nexiting\n");
    expect(r.code).toBe(0);
  }

  test(
    "echo hello (the demo image)",
    async () => {
      const id = uid("echo");
      const r = await env.run(IMAGES.demo, id, ["/wasi-demo-app.wasm", "echo", "hello"]);
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("hello\nexiting\n");
      expect(r.code).toBe(0);
      await expectGone(id);
    },
    T,
  );

  test(
    "the tools image runs its copy of the demo",
    async () => {
      const r = await env.run(IMAGES.tools, uid("entry"), ["/wasi-demo-app.wasm", "echo", "from", "tools"]);
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("from tools\nexiting\n");
      expect(r.code).toBe(0);
    },
    T,
  );

  for (const code of [0, 3, 255]) {
    test(
      `exit ${code} → ctr exits ${code}`,
      async () => {
        const r = await env.run(IMAGES.demo, uid(`exit${code}`), ["/wasi-demo-app.wasm", "exit", String(code)]);
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("");
        expect(r.code).toBe(code);
      },
      T,
    );
  }

  test(
    "env vars from --env reach the module, with the image's",
    async () => {
      const r = await env.run(IMAGES.tools, uid("env"), ["/env.wasm"], {
        extra: ["--env", "K=V", "--env", "SPACED=a b  c", "--env", "UNI=žluťoučký kůň ✓", "--env", "EMPTY=", "--env", "EQ=a=b=c"],
      });
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      const envs = r.stdout
        .split("\n")
        .filter((l) => l.startsWith("env:"))
        .map((l) => l.slice(4));
      expect(envs).toContain("K=V");
      expect(envs).toContain("SPACED=a b  c");
      expect(envs).toContain("UNI=žluťoučký kůň ✓");
      expect(envs).toContain("EMPTY=");
      expect(envs).toContain("EQ=a=b=c");
      expect(envs).toContain("PATH=/"); // from the image config
      // The shim's and executor's own environment does not leak into the module.
      expect(envs.filter((e) => /^(BUNWASI_|TTRPC_ADDRESS=|GRPC_ADDRESS=|NAMESPACE=)/.test(e) || e.includes(CANARY))).toEqual([]);
    },
    T,
  );

  test(
    "args with spaces, tabs, unicode and empty strings round-trip exactly",
    async () => {
      const args = [
        "/env.wasm",
        "hello world",
        "  two  spaces ",
        "tab\there",
        "ünïcødé ✓ 🐳 日本語",
        "",
        "--flag=x",
        "-",
        "$HOME",
        "'q'\"dq\"",
      ];
      const r = await env.run(IMAGES.tools, uid("args"), args);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      const got = r.stdout.split("\n").filter((l) => l.startsWith("arg["));
      expect(got).toEqual(args.map((a, i) => `arg[${i}]=${a}`));
      // And through the demo's echo, which joins them with one space.
      const e = await env.run(IMAGES.demo, uid("echo-args"), ["/wasi-demo-app.wasm", "echo", "a  b", "ü ✓", "🐳"]);
      expect(e.stdout).toBe("a  b ü ✓ 🐳\nexiting\n");
      expect(e.code).toBe(0);
    },
    T,
  );

  test(
    "a module writes a file into its own rootfs, not the host's",
    async () => {
      const id = uid("write");
      const name = `bunwasi-written-${process.pid}-${Date.now()}.txt`;
      rmSync(join("/tmp", name), { force: true });
      // Without --rm the container (and its snapshot) stays, so we can look at what it wrote.
      const r = await env.cd.ctr([
        "run",
        "--runtime",
        RUNTIME,
        IMAGES.tools,
        id,
        "/wasi-demo-app.wasm",
        "write",
        `/tmp/${name}`,
        "written ✓",
      ]);
      try {
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("exiting\n");
        expect(r.code).toBe(0);
        expect(existsSync(join("/tmp", name))).toBe(false);
        // The container's writable layer: `ctr snapshots mounts` shows its overlay upperdir.
        const m = await env.cd.ctr(["snapshots", "mounts", "/mnt", id]);
        expect(m.code).toBe(0);
        const upper = /upperdir=([^,\s]+)/.exec(m.stdout)?.[1];
        expect(upper).toBeDefined();
        expect(readFileSync(join(upper as string, "tmp", name), "utf8")).toBe("written ✓");
        // Another container from the same image does not see it.
        const other = await env.run(IMAGES.tools, uid("write-other"), ["/escape.wasm", `/tmp/${name}`]);
        expect(other.stdout).toBe(`/tmp/${name}: error No such file or directory\n`);
      } finally {
        await env.cd.ctr(["containers", "rm", id]);
      }
    },
    T,
  );

  test(
    "a module cannot see the host outside its rootfs, nor the container's /proc, /sys and /dev",
    async () => {
      const marker = `bunwasi-marker-${process.pid}-${Date.now()}`;
      const hostFiles = [join("/tmp", marker), join("/root", marker), join(env.dir, marker)];
      for (const f of hostFiles) writeFileSync(f, "host secret\n");
      try {
        // Must fail: host files, "..", and the /proc links that lead out of a mount namespace.
        const denied = [
          ...hostFiles,
          `/../../tmp/${marker}`,
          `../../../../tmp/${marker}`,
          "/etc/passwd", // the host has one; the wasm image has none
          "/../etc/passwd",
          "../../../../etc/passwd",
          "/etc/hostname",
          "/proc/self/root/etc/passwd",
          `/proc/1/root/tmp/${marker}`,
          "/proc/self/cwd/etc/passwd",
          // The kernel's interfaces runc mounts for the executor are not in the module's view
          // (src/oci/wasi-view.ts; shared mode preopens only the rootfs and volumes): not the
          // executor's environment or memory, not /sys, not devices.
          "/proc/self/environ",
          "/proc/1/environ",
          "/proc/self/mem",
          "/proc/self/status",
          "/sys/kernel/hostname",
          "/sys/kernel",
          "/dev/mem",
          "/dev/null",
          "/dev/.bunwasi-root/notes.txt",
        ];
        // Readable: the rootfs itself.
        const allowed: [string, string][] = [["/notes.txt", "not a program"]];
        const probes = [...denied, ...allowed.map(([p]) => p)];
        const r = await env.run(IMAGES.tools, uid("escape"), ["/escape.wasm", ...probes]);
        expect(r.stderr).toBe("");
        expect(r.code).toBe(0);
        expect(r.stdout).not.toContain("host secret");
        expect(r.stdout).not.toContain("root:");
        expect(r.stdout).not.toContain(CANARY);
        const lines = r.stdout.trimEnd().split("\n");
        expect(lines).toEqual([
          ...denied.map((p) => expect.stringMatching(new RegExp(`^${p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: error `))),
          ...allowed.map(([p, first]) => `${p}: ok ${first}`),
        ]);
      } finally {
        for (const f of hostFiles) rmSync(f, { force: true });
      }
    },
    T,
  );

  test(
    "stdin piped into ctr run reaches the module (cat.wasm), and EOF ends it",
    async () => {
      const id = uid("stdin");
      const p = env.cd.ctrSpawn(["run", "--rm", "--runtime", RUNTIME, IMAGES.tools, id, "/cat.wasm"], { stdin: "pipe" });
      const killer = setTimeout(() => p.kill("SIGKILL"), 45_000);
      try {
        // ctr 1.6 loses stdin's EOF if the input ends before the task exists (docs/ARCHITECTURE.md, "Pitfalls").
        await until(
          "the task to run",
          async () => (await env.cd.ctr(["tasks", "ls"])).stdout.split("\n").some((l) => l.startsWith(`${id} `) && l.includes("RUNNING")),
          20_000,
        );
        const input = `line one\nzwei ✓ 🐳\n${"x".repeat(100_000)}\nlast line without newline`;
        const { stdout, stderr, code } = await feed(p, input);
        expect(stderr).toBe("");
        expect(stdout.length).toBe(input.length);
        expect(stdout).toBe(input);
        expect(code).toBe(0);
      } finally {
        clearTimeout(killer);
      }
    },
    T,
  );

  test(
    "10 MiB of stdout arrives complete",
    async () => {
      const r = await env.run(IMAGES.tools, uid("bigout"), ["/bigout.wasm", "10"]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      const mib = Array.from({ length: 1 << 20 }, (_, i) => "0123456789abcdef\n"[i % 17]).join("");
      expect(r.stdout.length).toBe(10 * (1 << 20));
      // Compare per MiB so a failure says where.
      for (let m = 0; m < 10; m++) {
        const chunk = r.stdout.slice(m << 20, (m + 1) << 20);
        if (chunk !== mib) throw new Error(`MiB ${m} differs from the pattern`);
      }
    },
    T,
  );

  test(
    "a bare module name is found through the image's PATH",
    async () => {
      const r = await env.run(IMAGES.tools, uid("path"), ["env.wasm", "x"]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout.split("\n").filter((l) => l.startsWith("arg["))).toEqual(["arg[0]=env.wasm", "arg[1]=x"]);
    },
    T,
  );

  test(
    "a WAT text module runs as is",
    async () => {
      const r = await env.run(IMAGES.tools, uid("wat"), ["/hello.wat"]);
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("hello from wat\n");
      expect(r.code).toBe(0);
    },
    T,
  );

  test(
    "entrypoints reached through symlinks (absolute, relative, via PATH) run; args[0] is kept",
    async () => {
      const argLines = (out: string) => out.split("\n").filter((l) => l.startsWith("arg["));
      const abs = await env.run(IMAGES.tools, uid("link-abs"), ["/bin/app.wasm", "a"]);
      expect(abs.stderr).toBe("");
      expect(argLines(abs.stdout)).toEqual(["arg[0]=/bin/app.wasm", "arg[1]=a"]);
      const rel = await env.run(IMAGES.tools, uid("link-rel"), ["/rel.wasm", "b"]);
      expect(rel.stderr).toBe("");
      expect(argLines(rel.stdout)).toEqual(["arg[0]=/rel.wasm", "arg[1]=b"]);
      const path = await env.run(IMAGES.tools, uid("link-path"), ["app.wasm", "c"], { extra: ["--env", "PATH=/nowhere:/bin"] });
      expect(path.stderr).toBe("");
      expect(argLines(path.stdout)).toEqual(["arg[0]=app.wasm", "arg[1]=c"]);
    },
    T,
  );

  test(
    "module.wasm#func runs that export",
    async () => {
      const codes = await Promise.all(
        ["/funcs.wasm", "/funcs.wasm#other", "/funcs.wasm#ret"].map((a) => env.run(IMAGES.tools, uid("func"), [a])),
      );
      expect(codes.map((r) => r.code)).toEqual([1, 7, 0]);
      expect(codes.map((r) => r.stderr + r.stdout)).toEqual(["", "", ""]);
      const missing = await env.run(IMAGES.tools, uid("func-missing"), ["/funcs.wasm#missing"]);
      expect(missing.code).toBe(125);
      expect(missing.stderr).toContain('"missing"');
    },
    T,
  );

  test(
    "ctr run --memory-limit bounds the module's memory (clean memory.grow failure)",
    async () => {
      const free = await env.run(IMAGES.tools, uid("grow"), ["/grow.wasm"]);
      expect(free.code).toBe(0);
      const limited = await env.run(IMAGES.tools, uid("grow-limited"), ["/grow.wasm"], { extra: ["--memory-limit", String(32 << 20)] });
      expect(limited.stderr).toBe("");
      expect(limited.code).toBe(12);
    },
    T,
  );

  test(
    "a read-only rootfs (ctr run --read-only): runs, and writes fail",
    async () => {
      const ok = await env.run(IMAGES.tools, uid("ro"), ["/wasi-demo-app.wasm", "echo", "ro"], { extra: ["--read-only"] });
      expect(ok.stderr).toBe("");
      expect(ok.stdout).toBe("ro\nexiting\n");
      expect(ok.code).toBe(0);
      const w = await env.run(IMAGES.tools, uid("ro-write"), ["/wasi-demo-app.wasm", "write", "/tmp/x", "y"], { extra: ["--read-only"] });
      expect(w.stderr).toStartWith("open /tmp/x: ");
      expect(w.code).toBe(1);
    },
    T,
  );

  test(
    "the executor directory mounted into the container is not in the module's view: it reads none of it, and its writes do not reach it",
    async () => {
      const files = ["/.bunwasi/libwasmtime.so", "/.bunwasi/ld-linux-x86-64.so.2"];
      const r = await env.run(IMAGES.tools, uid("exec-hidden"), ["/escape.wasm", ...files]);
      expect(r.stdout).toBe(files.map((f) => `${f}: error No such file or directory\n`).join(""));
      // What the module writes there lands in its own rootfs, under the executor's mount.
      for (const f of files) await env.run(IMAGES.tools, uid("exec-plant"), ["/wasi-demo-app.wasm", "write", f, "planted"]);
      await expectEchoWorks();
    },
    T,
  );

  test(
    "containers run concurrently, each with its own output",
    async () => {
      const n = 6;
      const rs = await Promise.all(
        Array.from({ length: n }, (_, i) => env.run(IMAGES.demo, uid(`par${i}`), ["/wasi-demo-app.wasm", "echo", `par ${i}`])),
      );
      expect(rs.map((r) => [r.code, r.stdout, r.stderr])).toEqual(Array.from({ length: n }, (_, i) => [0, `par ${i}\nexiting\n`, ""]));
    },
    T,
  );

  test(
    "a native busybox container runs through the same runtime",
    async () => {
      const id = uid("native");
      const r = await env.run(IMAGES.busybox, id, ["sh", "-c", "echo native; echo to-stderr >&2; exit 4"]);
      expect(r.stdout).toBe("native\n");
      expect(r.stderr).toBe("to-stderr\n");
      expect(r.code).toBe(4);
      await expectGone(id);
    },
    T,
  );

  describe("errors name their cause, and the shim keeps serving", () => {
    test(
      "a trapping module: exit 134 and the trap on stderr",
      async () => {
        const id = uid("trap");
        const r = await env.run(IMAGES.tools, id, ["/trap.wasm"]);
        expect(r.code).toBe(134);
        expect(r.stdout).toBe("");
        expect(r.stderr).toContain("wasm trap: wasm `unreachable` instruction executed");
        await expectGone(id);
        await expectEchoWorks();
      },
      T,
    );

    test(
      "a file that is neither wasm nor executable",
      async () => {
        const id = uid("notes");
        const r = await env.run(IMAGES.tools, id, ["/notes.txt"]);
        expect(r.code).not.toBe(0);
        expect(r.stdout).toBe("");
        expect(r.stderr).toContain("/notes.txt: not a wasm module and not executable");
        await expectGone(id);
        await expectEchoWorks();
      },
      T,
    );

    test(
      "a missing module",
      async () => {
        const id = uid("nope");
        const r = await env.run(IMAGES.tools, id, ["/nope.wasm"]);
        expect(r.code).not.toBe(0);
        expect(r.stdout).toBe("");
        expect(r.stderr).toContain("/nope.wasm: no such file");
        await expectGone(id);
        await expectEchoWorks();
      },
      T,
    );

    test(
      "a symlink entrypoint pointing out of the rootfs is resolved inside it",
      async () => {
        // /evil.wasm → ../../../../../usr/bin/runc: ".." stops at the container's "/".
        const id = uid("evil");
        const r = await env.run(IMAGES.tools, id, ["/evil.wasm"]);
        expect(r.code).not.toBe(0);
        expect(r.stdout).toBe("");
        expect(r.stderr).toContain("/evil.wasm: no such file");
        await expectGone(id);
        await expectEchoWorks();
      },
      T,
    );

    test(
      "a malformed config.json (shim driven directly): Create names it, Shutdown, then delete",
      async () => {
        const id = uid("badjson");
        const ns = env.cd.namespace;
        const bundle = join(env.dir, id);
        mkdirSync(join(bundle, "rootfs"), { recursive: true });
        writeFileSync(join(bundle, "config.json"), '{"ociVersion": "1.0.2", "process": {"args": ["/x.wasm",]}');
        const flags = [
          "-namespace",
          ns,
          "-address",
          env.cd.address,
          "-publish-binary",
          "/usr/bin/containerd",
          "-id",
          id,
          "-bundle",
          bundle,
        ];
        // Shared mode: the thin shim finds this file's daemon, as containerd's shims do.
        const shimEnvVars = { ...(process.env as Record<string, string>), TTRPC_ADDRESS: env.cd.ttrpcAddress, ...(daemon?.env ?? {}) };
        const started = Bun.spawnSync([SHIM, ...flags, "start"], {
          cwd: bundle,
          env: shimEnvVars,
          stdin: "ignore",
          stdout: "pipe",
          stderr: "pipe",
        });
        expect(started.stderr.toString()).toBe("");
        expect(started.exitCode).toBe(0);
        const address = started.stdout.toString();
        expect(address).toMatch(/^unix:\/\/\/\S+$/);
        expect(readFileSync(join(bundle, "address"), "utf8")).toBe(address);

        const client = await Client.connect(socketPath(address), { timeoutMs: 5_000 });
        let shimPid = 0;
        try {
          const task = client.service(TaskDefinition);
          shimPid = (await task.connect({ id }, { timeoutMs: 5_000 })).shimPid;
          expect(shimPid).toBeGreaterThan(0);
          let err: unknown;
          try {
            await task.create(CreateTaskRequest.fromPartial({ id, bundle }), { timeoutMs: 10_000 });
          } catch (e) {
            err = e;
          }
          expect(err).toBeInstanceOf(TtrpcError);
          const msg = (err as Error).message;
          expect(msg).toContain("config.json");
          expect(msg).toMatch(/not valid JSON at line 1 column \d+/);
          // Still serving, and nothing was kept of the failed container.
          const state = await task.state({ id, execId: "" }, { timeoutMs: 5_000 }).catch((e: unknown) => e);
          expect(state).toBeInstanceOf(TtrpcError);
          expect((state as Error).message).toContain("not found");
          await task.shutdown({ id, now: false }, { timeoutMs: 5_000 });
        } finally {
          client.close();
        }
        // Normal mode: the pod's server exits. Shared mode: the daemon stays, the sandbox goes.
        if (mode.shared) {
          expect(shimPid).toBe(daemon?.pid as number);
          await until("the sandbox to close", () => !existsSync(socketPath(address)));
        } else await until("the shim server to exit", () => !alive(shimPid));
        expect(existsSync(socketPath(address))).toBe(false); // no stale socket in /run/containerd/s

        const del = Bun.spawnSync([SHIM, ...flags, "delete"], {
          cwd: bundle,
          env: shimEnvVars,
          stdin: "ignore",
          stdout: "pipe",
          stderr: "pipe",
        });
        expect(del.exitCode).toBe(0);
        const resp = DeleteResponse.decode(new Uint8Array(del.stdout));
        expect(resp.exitStatus).toBe(137);
        expect(resp.exitedAt).toBeDefined();
        const at = Number(resp.exitedAt?.seconds ?? 0) * 1000;
        // A wall-clock stamp from this run (whole seconds), not zero or another unit.
        expect(at).toBeGreaterThanOrEqual(Math.floor(FILE_START_MS / 1000) * 1000);
        expect(at).toBeLessThanOrEqual(Date.now());
        expect(existsSync(join(containerStateDir(ns), id))).toBe(false);
        rmSync(bundle, { recursive: true, force: true });

        await expectEchoWorks();
      },
      T,
    );
  });
});
