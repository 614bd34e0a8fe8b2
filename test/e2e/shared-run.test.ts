// Shared mode end to end: a private containerd (1.6) runs io.containerd.wasmtimed.v1, whose
// thin shim finds the daemon this file starts (its own socket, passed to containerd as
// BUNWASI_DAEMON_SOCKET). What a user sees of `ctr run` (output, exit codes, env, args,
// stdin, native containers), kills of modules blocked in every way, many containers and
// pods at once with the compile counted, the manager's answers to bad requests, and the
// daemon's fds over create/start/delete cycles. Needs root, containerd and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DAEMON_VM_ENV } from "../../src/common/vm-env.ts";
import { containerStateDir } from "../../src/runtime-v2/paths.ts";
import { Code, TtrpcError } from "../../src/ttrpc/index.ts";
import { feed, mountsUnder } from "../support/containerd.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { IMAGES, REPO, type ShimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 120_000;
const THIN_SHIM = join(REPO, "build/bin/containerd-shim-wasmtimed-v1");
let seq = 0;
const uid = (what: string) => `sh-${what}-${process.pid}-${seq++}`;

/** Kill latencies measured here (printed at the end, never asserted). */
const latencies: Record<string, number[]> = {};

describe("ctr run through io.containerd.wasmtimed.v1 (shared mode)", () => {
  let shared: SharedEnv | undefined;
  let dir: string;
  let daemon: Daemon;
  let env: ShimEnv;
  const run = (image: string, id: string, args: string[], o: Parameters<ShimEnv["run"]>[3] = {}) =>
    env.run(image, id, args, { runtime: SHARED_RUNTIME, ...o });

  beforeAll(async () => {
    shared = await sharedEnv({ prefix: "/tmp/bws-" });
    ({ dir, daemon, env } = shared);
  }, 300_000);

  afterAll(async () => {
    for (const [what, ms] of Object.entries(latencies)) {
      console.log(`kill latency (${what}): ${ms.map((m) => m.toFixed(1)).join(", ")} ms`);
    }
    // The daemon's own measure: from the kill to the run (its thread) being over.
    for (const line of daemon?.log().split("\n") ?? []) if (line.includes("after the kill")) console.log(line);
    await shared?.stop();
  }, T);

  async function sandboxes() {
    const { client, manager } = await daemon.manager();
    try {
      return await manager.listSandboxes({});
    } finally {
      client.close();
    }
  }

  test(
    "echo hello (the demo image) runs in the daemon, not in a process of its own",
    async () => {
      const r = await run(IMAGES.demo, uid("echo"), ["/wasi-demo-app.wasm", "echo", "hello"]);
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("hello\nexiting\n");
      expect(r.code).toBe(0);
      // The sandbox went with its container.
      await until("the sandbox to close", async () => (await sandboxes()).sandboxes.length === 0);
    },
    T,
  );

  test("the daemon re-executed itself once with its memory settings: the pid it was started as, the settings in its environment", () => {
    const environ = readFileSync(`/proc/${daemon.pid}/environ`, "latin1").split("\0");
    for (const [k, v] of Object.entries(DAEMON_VM_ENV)) {
      expect(process.env[k]).toBeUndefined(); // not in what the harness started it with (its env is ours)
      expect(environ).toContain(`${k}=${v}`);
    }
    // Its log's lines carry the pid it has now: the one the harness spawned.
    expect(daemon.log()).toContain(`pid=${daemon.pid}`);
  });

  for (const code of [0, 3, 255]) {
    test(
      `exit ${code} → ctr exits ${code}`,
      async () => {
        const r = await run(IMAGES.demo, uid(`exit${code}`), ["/wasi-demo-app.wasm", "exit", String(code)]);
        expect(r.stderr).toBe("");
        expect(r.code).toBe(code);
      },
      T,
    );
  }

  test(
    "env from the image and --env reach the module, the daemon's own do not",
    async () => {
      const r = await run(IMAGES.tools, uid("env"), ["/env.wasm"], {
        extra: ["--env", "K=V", "--env", "SPACED=a b  c", "--env", "EMPTY="],
      });
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      const envs = r.stdout
        .split("\n")
        .filter((l) => l.startsWith("env:"))
        .map((l) => l.slice(4));
      expect(envs).toContain("K=V");
      expect(envs).toContain("SPACED=a b  c");
      expect(envs).toContain("EMPTY=");
      expect(envs).toContain("PATH=/");
      expect(envs.filter((e) => /^(BUNWASI_|TTRPC_ADDRESS=|GRPC_ADDRESS=|NAMESPACE=)/.test(e))).toEqual([]);
    },
    T,
  );

  test(
    "args round-trip exactly; a bare name is found through PATH",
    async () => {
      const args = ["/env.wasm", "hello world", "tab\there", "ünïcødé ✓ 🐳", "", "--flag=x"];
      const r = await run(IMAGES.tools, uid("args"), args);
      expect(r.stderr).toBe("");
      expect(r.stdout.split("\n").filter((l) => l.startsWith("arg["))).toEqual(args.map((a, i) => `arg[${i}]=${a}`));
      const p = await run(IMAGES.tools, uid("path"), ["env.wasm", "x"]);
      expect(p.stdout.split("\n").filter((l) => l.startsWith("arg["))).toEqual(["arg[0]=env.wasm", "arg[1]=x"]);
    },
    T,
  );

  test(
    "WAT text and #export entrypoints; a trap is 134 with its message; not-wasm is refused",
    async () => {
      const wat = await run(IMAGES.tools, uid("wat"), ["/hello.wat"]);
      expect(wat.stdout).toBe("hello from wat\n");
      expect(wat.code).toBe(0);
      const other = await run(IMAGES.tools, uid("export"), ["/funcs.wasm#other"]);
      expect(other.code).toBe(7);
      const trap = await run(IMAGES.tools, uid("trap"), ["/trap.wasm"]);
      expect(trap.code).toBe(134);
      expect(trap.stderr).toContain("unreachable");
      const notWasm = await run(IMAGES.tools, uid("notes"), ["/notes.txt"]);
      expect(notWasm.code).not.toBe(0);
      expect(notWasm.stderr).toContain("not a wasm module and not executable");
    },
    T,
  );

  test(
    "the OCI memory limit is the store's limit: memory.grow past it fails (12), without it succeeds (0)",
    async () => {
      const limited = await run(IMAGES.tools, uid("grow"), ["/grow.wasm"], { extra: ["--memory-limit", String(32 << 20)] });
      expect(limited.code).toBe(12);
      const free = await run(IMAGES.tools, uid("grow"), ["/grow.wasm"]);
      expect(free.code).toBe(0);
    },
    T,
  );

  test(
    "the module sees its rootfs as / and nothing of the host",
    async () => {
      const marker = join("/tmp", `bunwasi-shared-marker-${process.pid}`);
      writeFileSync(marker, "host secret\n");
      try {
        const denied = [
          marker,
          `/../..${marker}`,
          "/etc/passwd",
          "/proc/self/environ",
          "/proc/1/root/etc/passwd",
          "/sys/kernel",
          "/dev/null",
        ];
        const r = await run(IMAGES.tools, uid("escape"), ["/escape.wasm", ...denied, "/notes.txt"]);
        expect(r.code).toBe(0);
        expect(r.stdout).not.toContain("host secret");
        expect(r.stdout).not.toContain("root:");
        const lines = r.stdout.trimEnd().split("\n");
        expect(lines.slice(0, denied.length)).toEqual(
          denied.map((p) => expect.stringMatching(new RegExp(`^${p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: error `))),
        );
        expect(lines[denied.length]).toBe("/notes.txt: ok not a program");
      } finally {
        rmSync(marker, { force: true });
      }
    },
    T,
  );

  test(
    "a volume (ctr run --mount, bind) is the module's at its destination: read-only when mounted so, writable otherwise",
    async () => {
      const ro = join(dir, "vol-ro");
      const rw = join(dir, "vol-rw");
      mkdirSync(ro, { recursive: true });
      mkdirSync(rw, { recursive: true });
      writeFileSync(join(ro, "in.txt"), "from the host\n");
      const read = await run(IMAGES.tools, uid("vol"), ["/escape.wasm", "/data/in.txt"], {
        extra: ["--mount", `type=bind,src=${ro},dst=/data,options=rbind:ro`],
      });
      expect(read.stdout).toBe("/data/in.txt: ok from the host\n");
      const denied = await run(IMAGES.tools, uid("vol-ro-write"), ["/wasi-demo-app.wasm", "write", "/data/new.txt", "x"], {
        extra: ["--mount", `type=bind,src=${ro},dst=/data,options=rbind:ro`],
      });
      expect(denied.code).toBe(1);
      expect(existsSync(join(ro, "new.txt"))).toBe(false);
      const wrote = await run(IMAGES.tools, uid("vol-rw"), ["/wasi-demo-app.wasm", "write", "/out/new.txt", "written ✓"], {
        extra: ["--mount", `type=bind,src=${rw},dst=/out,options=rbind:rw`],
      });
      expect(wrote.stderr).toBe("");
      expect(wrote.code).toBe(0);
      expect(readFileSync(join(rw, "new.txt"), "utf8")).toBe("written ✓");
    },
    T,
  );

  test(
    "stdin piped into ctr run reaches the module, and EOF ends it",
    async () => {
      const id = uid("stdin");
      const p = env.cd.ctrSpawn(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.tools, id, "/cat.wasm"], { stdin: "pipe" });
      await waitRunning(id);
      const input = `line one\nzwei ✓ 🐳\n${"x".repeat(200_000)}\nlast`;
      const { stdout, stderr, code } = await feed(p, input);
      expect(stderr).toBe("");
      expect(stdout).toBe(input);
      expect(code).toBe(0);
    },
    T,
  );

  test(
    "a native container (busybox) runs through the same runtime, under runc",
    async () => {
      const r = await run(IMAGES.busybox, uid("native"), ["sh", "-c", "echo native $((6*7)); exit 7"]);
      expect(r.stdout).toBe("native 42\n");
      expect(r.code).toBe(7);
    },
    T,
  );

  async function waitRunning(id: string): Promise<void> {
    await until(`${id} to run`, async () =>
      (await env.cd.ctr(["tasks", "ls"])).stdout.split("\n").some((l) => l.startsWith(`${id} `) && l.includes("RUNNING")),
    );
  }

  /** Starts `args` with ctr run --rm, kills it with `signal` once running; resolves with ctr's exit code. */
  async function killWhileRunning(what: string, args: string[], signal: "SIGTERM" | "SIGKILL", stdin: "pipe" | "ignore" = "ignore") {
    const id = uid(what);
    const p = env.cd.ctrSpawn(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.tools, id, ...args], { stdin });
    await waitRunning(id);
    // Let it settle into what it blocks in (a sleep, a read, the loop).
    await Bun.sleep(200);
    const t0 = performance.now();
    const k = await env.cd.ctr(["tasks", "kill", "-s", signal, id]);
    expect(k.stderr).toBe("");
    await until(
      `${id} to stop`,
      async () => !(await env.cd.ctr(["tasks", "ls"])).stdout.split("\n").some((l) => l.startsWith(`${id} `) && l.includes("RUNNING")),
    );
    (latencies[`${what} ${signal}, kill to STOPPED incl. ctr`] ??= []).push(performance.now() - t0);
    const code = await p.exited;
    if (stdin === "pipe") (p.stdin as import("bun").FileSink).end();
    return code;
  }

  test(
    "kill of a module sleeping in poll_oneoff: SIGTERM → 143, SIGKILL → 137",
    async () => {
      expect(await killWhileRunning("sleep", ["/wasi-demo-app.wasm", "sleep", "600000"], "SIGTERM")).toBe(143);
      expect(await killWhileRunning("sleep", ["/wasi-demo-app.wasm", "sleep", "600000"], "SIGKILL")).toBe(137);
    },
    T,
  );

  test(
    "ctr task pause / resume of a busy loop: PAUSED, RUNNING again, then a kill while paused → 137",
    async () => {
      const id = uid("pause");
      const p = env.cd.ctrSpawn(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.tools, id, "/busy.wasm"]);
      await waitRunning(id);
      const statusOf = async () =>
        (await env.cd.ctr(["tasks", "ls"])).stdout
          .split("\n")
          .map((l) => l.trim().split(/\s+/))
          .find((f) => f[0] === id)?.[2];
      expect((await env.cd.ctr(["tasks", "pause", id])).code).toBe(0);
      expect(await statusOf()).toBe("PAUSED");
      expect((await env.cd.ctr(["tasks", "resume", id])).code).toBe(0);
      expect(await statusOf()).toBe("RUNNING");
      expect((await env.cd.ctr(["tasks", "pause", id])).code).toBe(0);
      expect((await env.cd.ctr(["tasks", "kill", "-s", "SIGKILL", id])).code).toBe(0);
      expect(await p.exited).toBe(137);
    },
    T,
  );

  test(
    "ctr task metrics of a busy module: the CPU time of its thread grows",
    async () => {
      const id = uid("metrics");
      const p = env.cd.ctrSpawn(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.tools, id, "/busy.wasm"]);
      await waitRunning(id);
      const cpu = async () => {
        const r = await env.cd.ctr(["tasks", "metrics", "--format", "json", id]);
        expect(r.code).toBe(0);
        const j = JSON.parse(r.stdout);
        // cgroup v1 metrics (ns) or v2 (µs), whichever this host has.
        return Number(j.cpu?.usage?.total ?? j.cpu?.usage_usec ?? 0);
      };
      const first = await until("some CPU time", async () => (await cpu()) || 0);
      await until("more CPU time", async () => (await cpu()) > first);
      expect((await env.cd.ctr(["tasks", "kill", "-s", "SIGKILL", id])).code).toBe(0);
      expect(await p.exited).toBe(137);
    },
    T,
  );

  test(
    "kill of a busy loop: SIGTERM → 143, SIGKILL → 137",
    async () => {
      expect(await killWhileRunning("busy", ["/busy.wasm"], "SIGTERM")).toBe(143);
      expect(await killWhileRunning("busy", ["/busy.wasm"], "SIGKILL")).toBe(137);
    },
    T,
  );

  test(
    "kill of a module blocked reading stdin (nothing written, not closed) → 143, and its thread ends",
    async () => {
      expect(await killWhileRunning("stdin-kill", ["/cat.wasm"], "SIGTERM", "pipe")).toBe(143);
      // Nothing of it runs on in the daemon.
      await until("no wasm running in the daemon", async () => (await sandboxes()).wasmRunning === 0);
    },
    T,
  );

  test(
    "50 containers of one module (used nowhere else in this file): all run, the module is compiled once",
    async () => {
      const before = (await sandboxes()).modulesCompiled;
      const ids = Array.from({ length: 50 }, () => uid("many"));
      const results: { code: number; stdout: string }[] = [];
      // Ten at a time: ctr and containerd are the slow part on a 2-core machine.
      for (let i = 0; i < ids.length; i += 10) {
        results.push(
          ...(await Promise.all(ids.slice(i, i + 10).map((id, j) => run(IMAGES.tools, id, ["/bigout.wasm", "0", `n${i + j}`])))),
        );
      }
      for (const r of results) expect(r.code).toBe(0);
      expect((await sandboxes()).modulesCompiled - before).toBe(1);
    },
    T,
  );

  test(
    "30 pods at once, each in its own sandbox",
    async () => {
      const ids = Array.from({ length: 30 }, () => uid("pod"));
      const results = await Promise.all(ids.map((id) => run(IMAGES.demo, id, ["/wasi-demo-app.wasm", "echo", id])));
      results.forEach((r, i) => {
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe(`${ids[i]}\nexiting\n`);
        expect(r.code).toBe(0);
      });
      await until("every sandbox to close", async () => (await sandboxes()).sandboxes.length === 0);
    },
    T,
  );

  test("200 pods held at once on one daemon, each in its own sandbox and running; then stopped and gone", async () => {
    const ids = Array.from({ length: 200 }, () => uid("hold"));
    const ctrOk = async (args: string[]) => {
      const r = await env.cd.ctr(args);
      if (r.code !== 0) throw new Error(`ctr ${args.join(" ")}: exit ${r.code}: ${r.stderr}`);
      return r.stdout;
    };
    const inBatches = async (f: (id: string) => Promise<unknown>) => {
      for (let i = 0; i < ids.length; i += 8) await Promise.all(ids.slice(i, i + 8).map(f));
    };
    try {
      // `ctr run -d` returns once the task has started; each sleeps until killed.
      await inBatches((id) => ctrOk(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, "/wasi-demo-app.wasm", "sleep", "600000"]));
      const held = new Set((await sandboxes()).sandboxes.map((s) => s.id));
      expect(ids.filter((id) => !held.has(id))).toEqual([]);
      const running = (await ctrOk(["task", "ls"]))
        .split("\n")
        .filter((l) => /\sRUNNING\s*$/.test(l))
        .map((l) => l.split(/\s+/)[0]);
      expect(ids.filter((id) => !running.includes(id))).toEqual([]);
      // One daemon holds them all: every task's pid is the daemon's.
      const pids = new Set(
        (await ctrOk(["task", "ls"]))
          .split("\n")
          .filter((l) => l.startsWith("sh-hold-"))
          .map((l) => l.split(/\s+/)[1]),
      );
      expect([...pids]).toEqual([String(daemon.pid)]);
    } finally {
      await inBatches((id) => env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]));
      await inBatches(async (id) => {
        await until(
          `${id} to stop`,
          async () => !/RUNNING/.test((await env.cd.ctr(["task", "ls"])).stdout.split("\n").find((l) => l.startsWith(id)) ?? ""),
          60_000,
        );
        await env.cd.ctr(["task", "delete", id]);
        await env.cd.ctr(["container", "rm", id]);
      });
    }
    await until("every sandbox to close", async () => (await sandboxes()).sandboxes.length === 0, 60_000);
  }, 300_000);

  test(
    "create/start/delete cycles leave the daemon's fd count where it was, nothing mounted, no state",
    async () => {
      const cycle = async (i: number) => {
        const r = await run(IMAGES.demo, uid(`cycle${i}`), ["/wasi-demo-app.wasm", "echo", "c"]);
        expect(r.code).toBe(0);
        const n = await run(IMAGES.busybox, uid(`ncycle${i}`), ["true"]);
        expect(n.code).toBe(0);
      };
      await cycle(-1); // first use opens what the daemon keeps (engine, watcher thread, cache)
      await until("the sandboxes to close", async () => (await sandboxes()).sandboxes.length === 0);
      const before = daemon.fdCount();
      for (let i = 0; i < 10; i++) await cycle(i);
      await until("the sandboxes to close", async () => (await sandboxes()).sandboxes.length === 0);
      const after = await until("the fd count to settle", async () => {
        const n = daemon.fdCount();
        return n <= before ? n : 0;
      });
      // No growth. It may end lower: what the daemon holds only while something is watched
      // (its SIGCHLD listener) can still be open when `before` is read.
      expect(after).toBeGreaterThan(0);
      expect(after).toBeLessThanOrEqual(before);
      expect(mountsUnder(env.dir)).toEqual([]);
      // No container's state is left: the namespace's state dir is empty, or gone with its last
      // container (the thin shim's delete removes the namespace's folders when they are empty).
      const stateDir = containerStateDir(env.cd.namespace);
      expect(existsSync(stateDir) ? readdirSync(stateDir).filter((l) => l.includes("cycle")) : []).toEqual([]);
    },
    T,
  );

  describe("the manager refuses bad requests with clear errors", () => {
    async function refused(req: Record<string, string>, method: "createSandbox" | "deleteSandbox" = "createSandbox") {
      const { client, manager } = await daemon.manager();
      try {
        await (manager[method] as (r: unknown) => Promise<unknown>)(req);
        return null;
      } catch (e) {
        return e as TtrpcError;
      } finally {
        client.close();
      }
    }
    const bundle = () => {
      const b = join(dir, `bundle-${seq++}`);
      mkdirSync(b, { recursive: true });
      writeFileSync(join(b, "config.json"), "{}");
      return b;
    };
    const base = () => ({
      id: "ok-id",
      namespace: "ns1",
      bundle: bundle(),
      containerdAddress: "/x/c.sock",
      ttrpcAddress: "/x/c.sock.ttrpc",
    });

    test("path traversal and bad ids", async () => {
      for (const id of ["../../etc", "a/b", "", "x".repeat(77), ".hidden"]) {
        const e = await refused({ ...base(), id });
        expect(e).toBeInstanceOf(TtrpcError);
        expect(e?.code).toBe(Code.INVALID_ARGUMENT);
        expect(e?.message).toContain("sandbox id");
      }
      const ns = await refused({ ...base(), namespace: "../x" });
      expect(ns?.code).toBe(Code.INVALID_ARGUMENT);
      expect(ns?.message).toContain("namespace");
    });

    test("bad bundle paths", async () => {
      for (const b of ["relative/dir", "/nonexistent/bundle", "/tmp/../etc", dir]) {
        const e = await refused({ ...base(), bundle: b });
        expect(e?.code).toBe(Code.INVALID_ARGUMENT);
        expect(e?.message).toContain("bundle");
      }
    });

    test("a container that already runs in its sandbox", async () => {
      const id = uid("dup");
      const p = env.cd.ctrSpawn(["run", "--rm", "--runtime", SHARED_RUNTIME, IMAGES.tools, id, "/busy.wasm"]);
      await waitRunning(id);
      try {
        const e = await refused({
          id,
          containerId: id,
          namespace: env.cd.namespace,
          bundle: bundle(),
          containerdAddress: env.cd.address,
          ttrpcAddress: env.cd.ttrpcAddress,
        });
        expect(e?.code).toBe(Code.ALREADY_EXISTS);
        expect(e?.message).toContain(`container ${id} already exists`);
      } finally {
        await env.cd.ctr(["tasks", "kill", "-s", "SIGKILL", id]);
        await p.exited;
      }
    });

    test("delete of an unknown container: not found, nothing done", async () => {
      const { client, manager } = await daemon.manager();
      try {
        const r = await manager.deleteSandbox({ containerId: "no-such-container", namespace: "ns1", bundle: "" });
        expect(r.found).toBe(false);
      } finally {
        client.close();
      }
      const e = await refused({ containerId: "../x", namespace: "ns1", bundle: "" }, "deleteSandbox");
      expect(e?.code).toBe(Code.INVALID_ARGUMENT);
    });
  });

  test(
    "the thin shim with no daemon fails at once, naming the socket and what to start",
    async () => {
      const b = join(dir, "nodaemon");
      mkdirSync(b, { recursive: true });
      writeFileSync(join(b, "config.json"), "{}");
      const socket = join(dir, "nobody-here.sock");
      const p = Bun.spawn([THIN_SHIM, "-namespace", "ns1", "-address", "/x/c.sock", "-id", "c1", "start"], {
        cwd: b,
        env: { ...process.env, BUNWASI_DAEMON_SOCKET: socket },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      });
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      expect(code).not.toBe(0);
      expect(out).toBe("");
      expect(err).toContain(socket);
      expect(err).toContain("start containerd-wasmtimed");
    },
    T,
  );
});
