// Components under the real containerd (1.6) and the compiled shim: `ctr run` of a
// component kept as a file in a Linux-rootfs image (as the tools image keeps modules),
// for each scenario of the module suite (test/e2e/shim-run.test.ts) that means something
// for a component — echo, exit codes, env, args, trap, a file write, stdin — plus a kill,
// "#export" and a link error. Needs root, containerd and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { feed } from "../support/containerd.ts";
import { ctrTasks, fileText } from "../support/ctr-tasks.ts";
import { REPO, RUNTIME, type ShimEnv, shimEnv, WASM } from "../support/shim-env.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
// Stated as a test so that a machine without them fails loudly instead of skipping.
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 60_000;
const IMAGE = "docker.io/library/bunwasi-test-components:latest";
const COMPONENTS = ["wasi-demo-app", "env", "cat", "escape", "busy", "trap", "exit-code", "funcs", "grow", "missing-import"];

let seq = 0;
const uid = (what: string) => `comp-${what}-${process.pid}-${seq++}`;

function buildComponents(): void {
  const r = Bun.spawnSync(["bash", join(REPO, "scripts/build-components.sh")], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`build-components.sh failed: ${r.stderr.toString()}`);
}

describe("ctr run of components through containerd-shim-wasmtime-v1", () => {
  let env: ShimEnv;
  let logs: string;
  const { ctrOk, waitStatus, deleteTask, runDetached } = ctrTasks(
    () => env.cd,
    () => logs,
  );

  beforeAll(async () => {
    buildComponents();
    env = await shimEnv();
    logs = mkdtempSync("/tmp/bwc-logs-");
    const archive = join(env.dir, "components.tar");
    writeImageArchive(archive, {
      name: IMAGE,
      files: [
        ...COMPONENTS.map((c) => ({ path: `/${c}.wasm`, source: join(WASM, "components", `${c}.wasm`) })),
        // component text, compiled by the engine at start
        { path: "/exit-code.wat", source: join(REPO, "test/wasm/components/exit-code.wat"), mode: 0o644 },
        { path: "/tmp", dir: true as const, mode: 0o1777 },
      ],
      config: { entrypoint: ["/wasi-demo-app.wasm"], env: ["PATH=/"] },
    });
    const r = await env.cd.ctr(["images", "import", archive]);
    if (r.code !== 0) throw new Error(`import ${archive}: ${r.stderr}`);
  }, 600_000);
  afterAll(async () => {
    if (!env) return;
    const ns = env.cd.namespace;
    await env.stop();
    for (const d of [runtimeRoot(ns), containerStateDir(ns), logs]) rmSync(d, { recursive: true, force: true });
  }, T);

  const run = (id: string, args: string[], extra: string[] = []) => env.run(IMAGE, id, args, { extra });

  test(
    "echo hello",
    async () => {
      const r = await run(uid("echo"), ["/wasi-demo-app.wasm", "echo", "hello", "component"]);
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("hello component\nexiting\n");
      expect(r.code).toBe(0);
    },
    T,
  );

  test(
    "exit codes: 0; exit-with-code(3) → 3 (binary and WAT text); the preview 1 adapter's exit(3) → 1",
    async () => {
      const [zero, three, threeText, adapted] = await Promise.all([
        run(uid("exit0"), ["/wasi-demo-app.wasm", "exit", "0"]),
        run(uid("exit3"), ["/exit-code.wasm"]),
        run(uid("exit3wat"), ["/exit-code.wat"]),
        run(uid("exit3adapter"), ["/wasi-demo-app.wasm", "exit", "3"]),
      ]);
      expect([zero.code, three.code, threeText.code, adapted.code]).toEqual([0, 3, 3, 1]);
      for (const r of [zero, three, threeText, adapted]) expect(r.stderr).toBe("");
    },
    T,
  );

  test(
    "env vars from --env reach the component, with the image's",
    async () => {
      const r = await run(
        uid("env"),
        ["/env.wasm"],
        ["--env", "K=V", "--env", "SPACED=a b  c", "--env", "UNI=žluťoučký kůň ✓", "--env", "EMPTY="],
      );
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      const envs = r.stdout
        .split("\n")
        .filter((l) => l.startsWith("env:"))
        .map((l) => l.slice(4));
      for (const e of ["K=V", "SPACED=a b  c", "UNI=žluťoučký kůň ✓", "EMPTY=", "PATH=/"]) expect(envs).toContain(e);
      expect(envs.filter((e) => /^(BUNWASI_|TTRPC_ADDRESS=|GRPC_ADDRESS=|NAMESPACE=)/.test(e))).toEqual([]);
    },
    T,
  );

  test(
    "args with spaces, unicode and empty strings round-trip exactly",
    async () => {
      const args = ["/env.wasm", "hello world", "  two  spaces ", "ünïcødé ✓ 🐳", "", "--flag=x"];
      const r = await run(uid("args"), args);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout.split("\n").filter((l) => l.startsWith("arg["))).toEqual(args.map((a, i) => `arg[${i}]=${a}`));
    },
    T,
  );

  test(
    "a trapping component: exit 134 and the trap on stderr",
    async () => {
      const r = await run(uid("trap"), ["/trap.wasm"]);
      expect(r.code).toBe(134);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain("wasm trap: wasm `unreachable` instruction executed");
    },
    T,
  );

  test(
    "a component writes a file into its own rootfs, not the host's",
    async () => {
      const id = uid("write");
      const name = `bunwasi-comp-written-${process.pid}-${Date.now()}.txt`;
      // Without --rm the container (and its snapshot) stays, so we can look at what it wrote.
      const r = await env.cd.ctr(["run", "--runtime", RUNTIME, IMAGE, id, "/wasi-demo-app.wasm", "write", `/tmp/${name}`, "written ✓"]);
      try {
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("exiting\n");
        expect(r.code).toBe(0);
        expect(existsSync(join("/tmp", name))).toBe(false);
        const m = await env.cd.ctr(["snapshots", "mounts", "/mnt", id]);
        expect(m.code).toBe(0);
        const upper = /upperdir=([^,\s]+)/.exec(m.stdout)?.[1];
        expect(upper).toBeDefined();
        expect(readFileSync(join(upper as string, "tmp", name), "utf8")).toBe("written ✓");
        // The preopen is the container's root: outside it nothing is reachable.
        const probe = await run(uid("escape"), ["/escape.wasm", "/../etc/passwd", `/tmp/${name}`]);
        expect(probe.stdout).toBe(`/../etc/passwd: error Operation not permitted\n/tmp/${name}: error No such file or directory\n`);
      } finally {
        await env.cd.ctr(["containers", "rm", id]);
      }
    },
    T,
  );

  test(
    "stdin piped into ctr run reaches the component (cat), and EOF ends it",
    async () => {
      const id = uid("stdin");
      const p = env.cd.ctrSpawn(["run", "--rm", "--runtime", RUNTIME, IMAGE, id, "/cat.wasm"], { stdin: "pipe" });
      const killer = setTimeout(() => p.kill("SIGKILL"), 45_000);
      try {
        // ctr 1.6 loses stdin's EOF if the input ends before the task exists.
        await waitStatus(id, "RUNNING", 20_000);
        const input = `line one\nzwei ✓ 🐳\n${"x".repeat(100_000)}\nlast line without newline`;
        const { stdout, stderr, code } = await feed(p, input);
        expect(stderr).toBe("");
        expect(stdout).toBe(input);
        expect(code).toBe(0);
      } finally {
        clearTimeout(killer);
      }
    },
    T,
  );

  test(
    "ctr task kill stops a component spinning in wasm (no host calls): 143",
    async () => {
      const id = uid("busy");
      await runDetached(id, ["/busy.wasm"], IMAGE);
      await waitStatus(id, "RUNNING");
      // It is spinning inside wasi:cli/run (its CPU time grows), so the kill must interrupt wasm.
      const cpu = async () => JSON.parse(await ctrOk(["task", "metrics", "--format", "json", id])).cpu.usage.total as number;
      const before = await cpu();
      let after = before;
      // Look again until it has grown (30 s liveness; no rate is asserted).
      for (const deadline = Date.now() + 30_000; after <= before && Date.now() < deadline; ) {
        await Bun.sleep(50);
        after = await cpu();
      }
      expect(after).toBeGreaterThan(before);
      await ctrOk(["task", "kill", id]);
      await waitStatus(id, "STOPPED", 20_000);
      expect(await deleteTask(id)).toBe(143);
      await ctrOk(["containers", "rm", id]);
    },
    T,
  );

  test(
    "the demo as a daemon component: SIGKILL ends it with 137 after its verses",
    async () => {
      const id = uid("daemon");
      const log = await runDetached(id, ["/wasi-demo-app.wasm"], IMAGE);
      await waitStatus(id, "RUNNING");
      for (const end = Date.now() + 30_000; Date.now() < end && !fileText(log).includes("forever just because"); ) await Bun.sleep(25);
      expect(fileText(log)).toStartWith("This is a song that never ends.\n");
      await ctrOk(["task", "kill", "-s", "SIGKILL", id]);
      await waitStatus(id, "STOPPED", 20_000);
      expect(await deleteTask(id)).toBe(137);
      await ctrOk(["containers", "rm", id]);
    },
    T,
  );

  test(
    "--memory-limit bounds a component's memory growth",
    async () => {
      const [free, limited] = await Promise.all([
        run(uid("grow"), ["/grow.wasm"]),
        run(uid("grow-limited"), ["/grow.wasm"], ["--memory-limit", String(32 << 20)]),
      ]);
      expect([free.code, limited.code]).toEqual([0, 12]);
    },
    T,
  );

  test(
    "component.wasm#name calls that export; a missing one is refused with 125",
    async () => {
      const [other, ret, missing] = await Promise.all([
        run(uid("func-other"), ["/funcs.wasm#other"]),
        run(uid("func-ret"), ["/funcs.wasm#ret"]),
        run(uid("func-missing"), ["/funcs.wasm#missing"]),
      ]);
      expect([other.code, ret.code]).toEqual([7, 0]);
      expect(missing.code).toBe(125);
      expect(missing.stderr).toContain('component has no exported function "missing"');
    },
    T,
  );

  test(
    "an import nobody defines: 125 naming it, and the shim keeps serving",
    async () => {
      const r = await run(uid("link"), ["/missing-import.wasm"]);
      expect(r.code).toBe(125);
      expect(r.stderr).toContain("component imports instance `example:missing/thing@1.0.0`");
      const after = await run(uid("after"), ["/wasi-demo-app.wasm", "echo", "still", "serving"]);
      expect(after.stdout).toBe("still serving\nexiting\n");
    },
    T,
  );
});
