// prepare() + real runc: hand-made OCI bundles (rootfs with only a .wasm file, or busybox),
// run through the executor dir and the loader trick. Needs root and runc (CI is root).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { wasmtime } from "../../src/engines/wasmtime/index.ts";
import { type Prepared, prepare } from "../../src/oci/bundle.ts";
import { type ExecutorDir, ensureExecutorDir } from "../../src/oci/executor-dir.ts";
import { precompile } from "../../src/oci/precompile.ts";
import { mountRootfsAsync, unmountRootfs } from "../../src/oci/rootfs.ts";
import type { Spec } from "../../src/oci/spec.ts";
import { prepare as prepareEngine, REPO, wasm } from "../unit/engines/helpers.ts";

const runc = Bun.which("runc");

/** PID 1 has exec'd past `runc init` (whose Go runtime catches everything) and catches SIGTERM. */
function catchesSigterm(pid: number): boolean {
  try {
    if (readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[1] === "init") return false;
    const m = /^SigCgt:\s*([0-9a-fA-F]+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m !== null && (BigInt(`0x${m[1]}`) & (1n << 14n)) !== 0n;
  } catch {
    return false;
  }
}
const busybox = Bun.which("busybox") ?? (Bun.file("/bin/busybox").size ? "/bin/busybox" : null);
const canRun = process.getuid?.() === 0 && !!runc;

// Stated as a test so that a machine without them fails loudly instead of skipping.
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

describe("runc + bunwasi executor", () => {
  const base = mkdtempSync(join(tmpdir(), "bunwasi-runc-"));
  const runcRoot = join(base, "runc-state");
  const stateDir = join(base, "bundles");
  const ids: string[] = [];
  const mounted: string[] = [];
  let exec: ExecutorDir;
  let n = 0;

  beforeAll(async () => {
    prepareEngine(); // libwasmtime + build/wasm/*.wasm
    // The executor is the compiled shim binary (`… executor …`), as containerd's runs use it.
    const built = Bun.spawnSync(["bash", join(REPO, "scripts/build-shim.sh"), join(REPO, "build/bin"), "containerd-shim-wasmtime-v1"]);
    if (built.exitCode !== 0) throw new Error(`build-shim.sh: ${built.stderr.toString()}`);
    const shim = built.stdout.toString().trim();
    exec = await ensureExecutorDir({ engine: wasmtime, stateRoot: base, executor: { path: shim, subcommand: ["executor"] } });
  }, 120_000);

  afterAll(() => {
    for (const id of ids) Bun.spawnSync([runc as string, "--root", runcRoot, "delete", "--force", id], { stderr: "ignore" });
    for (const b of mounted) unmountRootfs(b);
    rmSync(base, { recursive: true, force: true });
  });

  /** A bundle from `runc spec`, edited; rootfs gets `files` (host path → container path). */
  function makeBundle(args: string[], files: [string, string][], edit?: (s: Spec) => void): string {
    const b = join(base, `bundle-${n++}`);
    mkdirSync(join(b, "rootfs"), { recursive: true });
    const r = Bun.spawnSync([runc as string, "spec"], { cwd: b });
    if (r.exitCode !== 0) throw new Error(`runc spec: ${r.stderr}`);
    const spec = JSON.parse(readFileSync(join(b, "config.json"), "utf8")) as Spec;
    spec.process.terminal = false;
    spec.process.args = args;
    edit?.(spec);
    writeFileSync(join(b, "config.json"), JSON.stringify(spec, null, 2));
    for (const [src, dst] of files) {
      const host = join(b, "rootfs", dst);
      mkdirSync(join(host, ".."), { recursive: true });
      copyFileSync(src, host);
      chmodSync(host, 0o755);
    }
    return b;
  }

  function newId(): string {
    const id = `bunwasi-e2e-${process.pid}-${ids.length}`;
    ids.push(id);
    return id;
  }

  function prep(b: string, id: string, flags?: string[]): Promise<Prepared> {
    return prepare({ id, bundle: b, stateDir, executorDir: exec, executorFlags: flags, engine: wasmtime });
  }

  async function runcRun(bundle: string, id: string): Promise<{ code: number; out: string; err: string; ms: number }> {
    const t = performance.now();
    const p = Bun.spawn([runc as string, "--root", runcRoot, "run", "--bundle", bundle, id], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    return { code, out, err, ms: performance.now() - t };
  }

  test("wasm echo hello: prints and exits 0", async () => {
    const b = makeBundle(["/wasi-demo-app.wasm", "echo", "hello"], [[wasm("wasi-demo-app"), "/wasi-demo-app.wasm"]]);
    const id = newId();
    const p = await prep(b, id);
    expect(p.kind).toBe("wasm");
    expect(p.runtimeBundle).toBe(join(stateDir, id));
    const r = await runcRun(p.runtimeBundle, id);
    expect(r.err).toBe("");
    expect(r.out).toBe("hello\nexiting\n");
    expect(r.code).toBe(0);
    // What the service's Delete removes: the container's work directory, the derived bundle's.
    rmSync(join(stateDir, id), { recursive: true, force: true });
  });

  test("exit code of `exit 3`", async () => {
    const b = makeBundle(["/wasi-demo-app.wasm", "exit", "3"], [[wasm("wasi-demo-app"), "/wasi-demo-app.wasm"]]);
    const id = newId();
    const r = await runcRun((await prep(b, id)).runtimeBundle, id);
    expect(r.code).toBe(3);
  });

  test("args and env reach the module as given; PATH lookup; writes land in the rootfs", async () => {
    const b = makeBundle(["env.wasm", "a b", "c"], [[wasm("env"), "/opt/app/env.wasm"]], (s) => {
      s.process.env = ["PATH=/opt/app", "GREETING=hi there"];
    });
    const id = newId();
    const p = await prep(b, id);
    expect(p.module).toBe("/opt/app/env.wasm");
    const r = await runcRun(p.runtimeBundle, id);
    expect(r.code).toBe(0);
    const lines = r.out.trim().split("\n");
    expect(lines.slice(0, 3)).toEqual(["arg[0]=env.wasm", "arg[1]=a b", "arg[2]=c"]);
    expect(lines).toContain("env:PATH=/opt/app");
    expect(lines).toContain("env:GREETING=hi there");
    // The module's env is the spec's, nothing of the executor's (its VM settings).
    expect(lines.filter((l) => l.startsWith("env:"))).toEqual(["env:PATH=/opt/app", "env:GREETING=hi there"]);

    const w = makeBundle(["/app.wasm", "write", "/out.txt", "written"], [[wasm("wasi-demo-app"), "/app.wasm"]], (s) => {
      s.root.readonly = false;
    });
    const wid = newId();
    expect((await runcRun((await prep(w, wid)).runtimeBundle, wid)).code).toBe(0);
    expect(readFileSync(join(w, "rootfs", "out.txt"), "utf8")).toBe("written");
  });

  test("busy loop killed by `runc kill TERM` exits 143 through the executor's trap", async () => {
    const b = makeBundle(["/busy.wasm"], [[wasm("busy"), "/busy.wasm"]]);
    const id = newId();
    const p = Bun.spawn([runc as string, "--root", runcRoot, "run", "--bundle", (await prep(b, id, ["--stats"])).runtimeBundle, id], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    // Wait (liveness bound only) until PID 1 is the executor, not runc init, and it catches
    // SIGTERM: a SIGTERM to PID 1 without a handler is dropped by the kernel.
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (Date.now() > deadline) throw new Error(`container ${id}: PID 1 never caught SIGTERM`);
      const s = Bun.spawnSync([runc as string, "--root", runcRoot, "state", id], { stderr: "ignore" });
      const pid = s.exitCode === 0 ? Number(JSON.parse(s.stdout.toString()).pid) : 0;
      if (pid > 0 && catchesSigterm(pid)) break;
      await Bun.sleep(20);
    }
    const t = performance.now();
    expect(Bun.spawnSync([runc as string, "--root", runcRoot, "kill", id, "TERM"]).exitCode).toBe(0);
    const code = await p.exited;
    const ms = performance.now() - t;
    console.log(`busy.wasm: SIGTERM → exit in ${ms.toFixed(0)} ms (printed, not asserted)`);
    // 143: the handler caught it (the latency is printed, not asserted: load decides it).
    expect(code).toBe(143);
    // As PID 1 of the container, the module ran on the executor's main thread and the C
    // handler's epoch bump trapped it (the stats line comes only after the run returned).
    const err = await new Response(p.stderr).text();
    expect(err).toContain("bunwasi-executor: code=143 ");
    expect(err).toContain("thread=main");
  });

  test("trap exits 134 with the message on stderr", async () => {
    const b = makeBundle(["/trap.wasm"], [[wasm("trap"), "/trap.wasm"]]);
    const id = newId();
    const r = await runcRun((await prep(b, id)).runtimeBundle, id);
    expect(r.code).toBe(134);
    expect(r.err).toContain("unreachable");
  });

  test("module.wasm#func calls that export", async () => {
    // funcs.wat: _start exits 1, `other` exits 7; an unknown export is an engine error (125)
    const b = makeBundle(["/funcs.wasm#other"], [[wasm("funcs"), "/funcs.wasm"]]);
    const id = newId();
    const p = await prep(b, id);
    expect(p.entry).toBe("other");
    expect((await runcRun(p.runtimeBundle, id)).code).toBe(7);
    const c = makeBundle(["/funcs.wasm#nope"], [[wasm("funcs"), "/funcs.wasm"]]);
    const cid = newId();
    const r = await runcRun((await prep(c, cid)).runtimeBundle, cid);
    expect(r.code).toBe(125);
    expect(r.err).toContain('no exported function "nope"');
  });

  test("native busybox runs `echo hi` unchanged", async () => {
    const b = makeBundle(["echo", "hi"], [[busybox as string, "/bin/busybox"]]);
    symlinkSync("busybox", join(b, "rootfs", "bin", "echo"));
    const id = newId();
    const p = await prep(b, id);
    expect(p.kind).toBe("native");
    expect(p.runtimeBundle).toBe(b);
    const r = await runcRun(p.runtimeBundle, id);
    expect(r.out).toBe("hi\n");
    expect(r.code).toBe(0);
  });

  test("read-only overlay rootfs: executor mounted at /dev/.bunwasi", async () => {
    const b = makeBundle(["/wasi-demo-app.wasm", "echo", "ro"], []);
    const lower = join(base, `lower-${n}`);
    // runc needs the spec's other mount points to exist in a read-only rootfs (images have them)
    for (const d of ["proc", "dev", "sys"]) mkdirSync(join(lower, d), { recursive: true });
    copyFileSync(wasm("wasi-demo-app"), join(lower, "wasi-demo-app.wasm"));
    // containerd's read-only view: overlay with two lowerdirs and no upperdir
    const empty = join(base, `empty-${n}`);
    mkdirSync(empty);
    await mountRootfsAsync(b, [{ type: "overlay", source: "overlay", options: [`lowerdir=${lower}:${empty}`] }]);
    mounted.push(b);
    const id = newId();
    const p = await prep(b, id);
    const d = JSON.parse(readFileSync(join(p.runtimeBundle, "config.json"), "utf8")) as Spec;
    expect(d.process.args[0]).toBe("/dev/.bunwasi/ld-linux-x86-64.so.2");
    const r = await runcRun(p.runtimeBundle, id);
    expect(r.err).toBe("");
    expect(r.out).toBe("ro\nexiting\n");
    expect(unmountRootfs(b)).toBe(1);
  });

  test("the module compiled on the host before the create, its one compiled file bound into the container: a hit", async () => {
    const cache = join(base, "cache");
    const b = makeBundle(["/wasi-demo-app.wasm", "echo", "cached"], [[wasm("wasi-demo-app"), "/wasi-demo-app.wasm"]]);
    const id = newId();
    const logs: string[] = [];
    const p = await prepare({
      id,
      bundle: b,
      stateDir,
      executorDir: exec,
      // The trusted side (the shim) compiles into the cache and checks the entry; the container gets that one file.
      compile: (m) => precompile(wasmtime, m, cache, (l) => logs.push(l)),
      executorFlags: ["--stats"],
      engine: wasmtime,
    });
    expect(logs).toEqual([]);
    const r = await runcRun(p.runtimeBundle, id);
    expect(r.out).toBe("cached\nexiting\n");
    expect(r.err).toContain('"cacheHit":true');
    // The C signal handlers came from the executor directory: no Worker.
    expect(exec.files).toContain("libbunwasi-kill.so");
    expect(r.err).toContain("thread=main");
    console.log(`cached run: ${r.ms.toFixed(0)} ms`);
  });
});
