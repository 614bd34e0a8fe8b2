// Attack class "compiled code we trust" (issue 16, item 7): compiled code is native code, so
// a node loads only what it compiled itself. Three attacks, each in every mode it applies to:
//  - another module's compiled code, read from a second container (normal mode: its view of
//    the node's compile cache; shared mode has no container filesystem to look from);
//  - a node cache file changed under the shim (its bytes swapped for another module's compile,
//    or its owner or mode changed): it must not be mapped, the module is compiled again;
//  - a forged precompiled label in containerd's content store (artifact A's layer pointed at
//    artifact B's compiled blob, every bunwasi label of A's blob copied onto it, the node
//    cache emptied): A must be compiled and run, never B.
// The first two on Debian's containerd 1.6 and on the pinned 2.x, through ctr; the forged
// label on 1.6 through the CRI (1.6's ctr cannot run artifacts) and on the pinned 2.x through
// ctr (it runs OCI-config artifacts). Needs root.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { Labels } from "../../src/oci/artifact.ts";
import { type BuiltArtifact, writeArtifactArchive } from "../../tools/image/artifact.ts";
import { busyboxImage, writeImageArchive } from "../../tools/image/index.ts";
import type { Containerd } from "../support/containerd.ts";
import { CONTAINERD_2X, CONTAINERDS } from "../support/containerd-versions.ts";
import { type CriEnv, criEnv, K8S_NAMESPACE, type Pod, SHARED_HANDLER } from "../support/cri.ts";
import { ctrTasks } from "../support/ctr-tasks.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv, startDaemon } from "../support/daemon.ts";
import { IMAGES, REPO, RUNTIME, type ShimEnv, WASM } from "../support/shim-env.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 180_000;
const ENGINE = "wasmtime";
/** The 2.x part's containerd: the pinned one (test/support/containerd-versions.ts). */
const V2_BINARY = CONTAINERD_2X.binary;

const MODES = [
  { mode: "normal", runtime: RUNTIME },
  { mode: "shared", runtime: SHARED_RUNTIME },
] as const;
type Mode = (typeof MODES)[number]["mode"];

/** A secret no file of this machine holds but the victim's module (and what the shim compiles from it). */
const SECRET = `bunwasi-victim-secret-${crypto.randomUUID()}`;
/** The same as a pattern that does not match its own text (an exec's argv holds it). */
const SECRET_PATTERN = `${SECRET.slice(0, 10)}[${SECRET[10]}]${SECRET.slice(11)}`;
const VICTIM_IMAGE = "docker.io/bunwasi-attack/victim:1";
const SNOOP_IMAGE = "docker.io/bunwasi-attack/snoop:1";

/** A module whose data segment holds SECRET; it prints "victim ran". */
const victimWat = `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "victim ran\\n")
  (data (i32.const 256) "${SECRET}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 11))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
`;

const sha256 = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");
let seq = 0;
const uid = (what: string) => `ac-${what}-${process.pid}-${seq++}`;

/** The compile cache's file of a module (its name starts with the module's digest), if there is one. */
function cacheFileOf(cacheDir: string, module: Uint8Array): string | undefined {
  const digest = sha256(module);
  const name = existsSync(cacheDir) ? readdirSync(cacheDir).find((n) => n.startsWith(`${digest}-`) && n.endsWith(".cwasm")) : undefined;
  return name ? join(cacheDir, name) : undefined;
}

/** Normal mode's shims get a data root of their own, `<dir>/exec`: this file changes cache files on purpose. */
function ownExecRoot(dir: string): string {
  mkdirSync(join(dir, "exec"));
  return join(dir, "exec");
}

// The cache attacks on each containerd: one containerd and one daemon per version.
for (const c of CONTAINERDS) {
  describe(`compiled code we trust, ctr on containerd ${c.name}`, () => {
    let shared: SharedEnv | undefined;
    let dir: string;
    let execRoot: string;
    let daemon: Daemon;
    let env: ShimEnv;
    const cacheDirOf = (mode: Mode) => (mode === "normal" ? join(execRoot, "cache") : join(dir, "d", "exec", "cache"));
    const logOf = (mode: Mode) => (mode === "normal" ? readFileSync(env.cd.logPath, "utf8") : daemon.log());

    beforeAll(async () => {
      shared = await sharedEnv({
        prefix: "/tmp/bwac-",
        containerd: (d) => ({ binary: c.binary, env: { BUNWASI_EXEC_ROOT: ownExecRoot(d) } }),
      });
      ({ dir, daemon, env } = shared);
      execRoot = join(dir, "exec");
      const victim = join(dir, "victim.tar");
      writeImageArchive(victim, {
        name: VICTIM_IMAGE,
        files: [{ path: "/victim.wat", data: victimWat, mode: 0o644 }],
        config: { entrypoint: ["/victim.wat"] },
      });
      // busybox with the applets a snoop needs, and a wasm module to be the container's process.
      const bb = busyboxImage({ name: SNOOP_IMAGE });
      const snoop = join(dir, "snoop.tar");
      writeImageArchive(snoop, {
        ...bb,
        files: [
          ...bb.files,
          ...["find", "grep", "xargs"].map((a) => ({ path: `/bin/${a}`, symlink: "busybox" })),
          { path: "/sleep.wasm", source: join(WASM, "wasi-demo-app.wasm") },
        ],
        config: { entrypoint: ["/sleep.wasm"], env: ["PATH=/bin"] },
      });
      for (const a of [victim, snoop]) {
        const r = await env.cd.ctr(["images", "import", a]);
        if (r.code !== 0) throw new Error(`import ${a}: ${r.stderr}`);
      }
    }, 300_000);

    afterAll(() => shared?.stop(), T);

    test(
      "normal mode: a second container finds no other module's compiled code (no cache directory in its filesystem, the secret nowhere)",
      async () => {
        const v = await env.run(VICTIM_IMAGE, uid("victim"), []);
        expect({ code: v.code, out: v.stdout }).toEqual({ code: 0, out: "victim ran\n" });
        // The victim's compile is in the node's cache, secret included: what there is to steal.
        const victimFile = cacheFileOf(join(execRoot, "cache"), new TextEncoder().encode(victimWat));
        expect(victimFile).toBeDefined();
        expect(readFileSync(victimFile as string).includes(Buffer.from(SECRET))).toBe(true);

        const t = ctrTasks(
          () => env.cd,
          () => env.dir,
        );
        const id = uid("snoop");
        await t.runDetached(id, ["/sleep.wasm", "sleep", "600"], SNOOP_IMAGE);
        try {
          await t.waitStatus(id, "RUNNING");
          const sh = (execId: string, script: string) => env.cd.ctr(["task", "exec", "--exec-id", execId, id, "sh", "-c", script]);
          const cacheDir = await sh("ls-cache", "ls -la /.bunwasi-cache");
          // Every regular file of the container's filesystem but /proc's and /sys's.
          const files = "find / \\( -path /proc -o -path /sys \\) -prune -o -type f -print";
          const compiled = await sh("find-compiled", `${files} | grep '[.]cwasm$'`);
          const secret = await sh("grep-secret", `${files} | xargs grep -l -e '${SECRET_PATTERN}'`);
          const mounts = await sh("mounts", "cat /proc/self/mountinfo");
          const seen = {
            cacheDirListed: cacheDir.code === 0,
            compiledFiles: compiled.stdout.split("\n").filter(Boolean).sort(),
            filesWithTheSecret: secret.stdout.split("\n").filter(Boolean),
            cacheDirMounted: mounts.stdout.split("\n").some((l) => l.split(" ")[3] === join(execRoot, "cache")),
          };
          console.log(`what the second container saw: ${JSON.stringify(seen)}`);
          expect(seen).toEqual({
            cacheDirListed: false,
            // Its own module's compile, bound in as one file, and nothing else.
            compiledFiles: ["/.bunwasi-run/module.cwasm"],
            filesWithTheSecret: [],
            cacheDirMounted: false,
          });
        } finally {
          await t.ctrOk(["task", "kill", "-s", "SIGKILL", id]);
          await t.waitStatus(id, "STOPPED");
          await t.deleteTask(id);
          await t.ctrOk(["containers", "delete", id]);
        }
      },
      T,
    );

    for (const { mode, runtime } of MODES) {
      const envWasm = () => new Uint8Array(readFileSync(join(WASM, "env.wasm")));
      const demoWasm = () => new Uint8Array(readFileSync(join(WASM, "wasi-demo-app.wasm")));
      /** Removes env.wasm's compile from the cache: the next run compiles it afresh. */
      const forgetEnv = () => {
        const digest = sha256(envWasm());
        const cacheDir = cacheDirOf(mode);
        if (existsSync(cacheDir)) for (const n of readdirSync(cacheDir)) if (n.startsWith(`${digest}-`)) rmSync(join(cacheDir, n));
      };
      /** env.wasm run with args "echo <word>": its own output, or the demo's were its compile swapped. */
      const runEnv = (word: string) => env.run(IMAGES.tools, uid(`env-${mode}`), ["/env.wasm", "echo", word], { runtime });

      test(
        `${mode} mode: a node cache file with another module's compiled bytes is not mapped; the module is compiled again`,
        async () => {
          const cacheDir = cacheDirOf(mode);
          forgetEnv();
          expect((await runEnv("first")).stdout).toContain("arg[1]=echo\narg[2]=first\n");
          const demo = await env.run(IMAGES.tools, uid(`demo-${mode}`), ["/wasi-demo-app.wasm", "echo", "x"], { runtime });
          expect(demo.stdout).toBe("x\nexiting\n");
          const envFile = cacheFileOf(cacheDir, envWasm()) as string;
          const demoFile = cacheFileOf(cacheDir, demoWasm()) as string;
          expect(envFile).toBeDefined();
          expect(demoFile).toBeDefined();
          // In place: same inode, owner and mode; only the bytes are the other module's compile.
          writeFileSync(envFile, readFileSync(demoFile));
          const r = await runEnv("swapped");
          console.log(`${mode} mode, env.wasm with the demo's compile in its cache file: ${JSON.stringify(r.stdout)}`);
          expect({ code: r.code, out: r.stdout.split("\n").slice(0, 3) }).toEqual({
            code: 0,
            out: ["arg[0]=/env.wasm", "arg[1]=echo", "arg[2]=swapped"],
          });
          // Compiled again: the file holds env.wasm's compile now.
          expect(Buffer.compare(readFileSync(envFile), readFileSync(demoFile))).not.toBe(0);
          expect(logOf(mode)).toMatch(/not used: its MAC does not verify/);
        },
        T,
      );

      for (const change of ["owner", "mode"] as const) {
        test(
          `${mode} mode: a node cache file whose ${change} changed is not mapped; the module is compiled again`,
          async () => {
            const cacheDir = cacheDirOf(mode);
            forgetEnv();
            expect((await runEnv("before")).code).toBe(0);
            const envFile = cacheFileOf(cacheDir, envWasm()) as string;
            expect(envFile).toBeDefined();
            const was = statSync(envFile);
            if (change === "owner") chownSync(envFile, 65534, 65534);
            else chmodSync(envFile, 0o666);
            const r = await runEnv(change);
            expect({ code: r.code, out: r.stdout.split("\n").slice(0, 3) }).toEqual({
              code: 0,
              out: ["arg[0]=/env.wasm", "arg[1]=echo", `arg[2]=${change}`],
            });
            // Replaced by a fresh compile: ours again, written by root, writable by no one else.
            const now = statSync(envFile);
            console.log(
              `${mode} mode, cache file with its ${change} changed: before uid ${was.uid} mode ${(was.mode & 0o777).toString(8)} ino ${was.ino}; after uid ${now.uid} mode ${(now.mode & 0o777).toString(8)} ino ${now.ino}`,
            );
            expect({ uid: now.uid, groupOrOtherWrite: now.mode & 0o022, sameFile: now.ino === was.ino }).toEqual({
              uid: 0,
              groupOrOtherWrite: 0,
              sameFile: false,
            });
            expect(logOf(mode)).toContain(change === "owner" ? "not used: owned by uid 65534" : "not used: mode 666");
          },
          T,
        );
      }
    }
  });
}

/** The artifacts of the forged-label attack: A prints its args (env.wasm), B echoes (the demo). */
function forgeryArtifacts(dir: string, configMediaType: "wasm" | "oci"): { archives: string[]; a: BuiltArtifact; b: BuiltArtifact } {
  const a = writeArtifactArchive(join(dir, "a.tar"), {
    name: "bunwasi-attack/a:1",
    layers: [{ source: join(WASM, "env.wasm") }],
    configMediaType,
    entrypoint: ["/a.wasm"],
  });
  const b = writeArtifactArchive(join(dir, "b.tar"), {
    name: "bunwasi-attack/b:1",
    layers: [{ source: join(WASM, "wasi-demo-app.wasm") }],
    configMediaType,
    entrypoint: ["/b.wasm"],
  });
  return { archives: [join(dir, "a.tar"), join(dir, "b.tar")], a, b };
}

/** `ctr content ls` as digest → labels. */
async function contentLabels(cd: Containerd, namespace?: string): Promise<Map<string, Record<string, string>>> {
  const r = await cd.ctr(["content", "ls"], namespace ? { namespace } : {});
  expect(r.code).toBe(0);
  const out = new Map<string, Record<string, string>>();
  for (const line of r.stdout.split("\n").slice(1)) {
    const cols = line.split("\t").filter(Boolean);
    if (!cols[0]?.startsWith("sha256:")) continue;
    const labels = cols[cols.length - 1] === "-" ? "" : (cols[cols.length - 1] ?? "");
    out.set(
      cols[0],
      Object.fromEntries(
        labels
          .split(",")
          .filter(Boolean)
          .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
      ),
    );
  }
  return out;
}

/**
 * The forgery, once A and B have run (so both compiles are stored): A's layer pointed at B's
 * compiled blob, every bunwasi.io label of A's own compiled blob copied onto B's, and the node
 * cache emptied, so that only the content store has a compile to offer.
 */
async function forge(cd: Containerd, a: BuiltArtifact, b: BuiltArtifact, cacheDir: string, namespace?: string): Promise<string> {
  const ns = namespace ? { namespace } : {};
  const before = await contentLabels(cd, namespace);
  const layerA = a.layers[0]!.digest;
  const layerB = b.layers[0]!.digest;
  const blobA = before.get(layerA)?.[Labels.precompiled(ENGINE)];
  const blobB = before.get(layerB)?.[Labels.precompiled(ENGINE)];
  expect(blobA).toMatch(/^sha256:/);
  expect(blobB).toMatch(/^sha256:/);
  const relabel = await cd.ctr(
    ["content", "label", layerA, `${Labels.precompiled(ENGINE)}=${blobB}`, `${Labels.gcRef(ENGINE)}=${blobB}`],
    ns,
  );
  expect(relabel.code).toBe(0);
  const copied = Object.entries(before.get(blobA as string) ?? {})
    .filter(([k]) => k.startsWith("bunwasi.io/"))
    .map(([k, v]) => `${k}=${v}`);
  expect(copied.length).toBeGreaterThan(0);
  const onB = await cd.ctr(["content", "label", blobB as string, ...copied], ns);
  expect(onB.code).toBe(0);
  rmSync(cacheDir, { recursive: true, force: true });
  return blobB as string;
}

const A_ARGS = ["/a.wasm", "echo", "forged"];
/** What A prints with A_ARGS (B, given them, would print "forged" and "exiting"). */
const A_OUTPUT = ["arg[0]=/a.wasm", "arg[1]=echo", "arg[2]=forged"];

for (const { mode } of MODES) {
  describe(`${mode} mode: a forged precompiled label, CRI on containerd 1.6`, () => {
    let dir: string;
    let daemon: Daemon | undefined;
    let cri: CriEnv;
    let pod: Pod;
    let arts: ReturnType<typeof forgeryArtifacts>;
    let n = 0;
    const cacheDir = () => (mode === "normal" ? join(dir, "exec", "cache") : join(dir, "d", "exec", "cache"));
    const log = () => (mode === "normal" ? readFileSync(cri.cd.logPath, "utf8") : (daemon as Daemon).log());

    beforeAll(async () => {
      dir = mkdtempSync("/tmp/bwaf-");
      mkdirSync(join(dir, "exec"));
      if (mode === "shared") {
        const built = Bun.spawnSync(["bash", join(REPO, "scripts/build-shim.sh")], { stdout: "pipe", stderr: "pipe" });
        if (built.exitCode !== 0) throw new Error(`build-shim.sh: ${built.stderr.toString()}`);
        daemon = await startDaemon(join(dir, "d"));
      }
      cri = await criEnv({
        env: { BUNWASI_EXEC_ROOT: join(dir, "exec"), ...(daemon?.env ?? {}) },
        ...(daemon ? { handler: SHARED_HANDLER, runtime: SHARED_RUNTIME } : {}),
      });
      arts = forgeryArtifacts(dir, "wasm");
      for (const a of arts.archives) {
        const r = await cri.cd.ctr(["images", "import", "--all-platforms", "--no-unpack", a], { namespace: K8S_NAMESPACE });
        if (r.code !== 0) throw new Error(`import ${a}: ${r.stderr}`);
      }
      const deadline = Date.now() + 20_000;
      for (;;) {
        const listed = await cri.crictlOk(["images", "-o", "json"]);
        if ([arts.a, arts.b].every((x) => listed.includes(x.name))) break;
        if (Date.now() > deadline) throw new Error(`the CRI plugin does not list the artifacts: ${listed}`);
        await Bun.sleep(100);
      }
      pod = await cri.runPod(`forged-${mode}`);
    }, 300_000);

    afterAll(async () => {
      await cri?.stop();
      await daemon?.stop("SIGKILL");
      if (dir) rmSync(dir, { recursive: true, force: true });
    }, T);

    async function runOnce(image: string, args: string[]): Promise<{ code: number; lines: string[] }> {
      const logPath = `c-${n++}.log`;
      const id = await cri.createContainer(pod, { metadata: { name: `c-${n}` }, image: { image }, args, log_path: logPath });
      await cri.crictlOk(["start", id]);
      const st = await cri.waitState(id, "CONTAINER_EXITED", 60_000);
      const text = readFileSync(join(pod.logDir, logPath), "utf8");
      return {
        code: st.status.exitCode,
        lines: text
          .split("\n")
          .filter(Boolean)
          .map((l) => l.split(" ").slice(3).join(" ")),
      };
    }

    test(
      "A's layer labelled with B's compile (A's labels copied onto it), the node cache empty: A is compiled and runs A",
      async () => {
        expect((await runOnce(arts.a.name, ["echo", "first"])).lines.slice(0, 2)).toEqual(["arg[0]=/a.wasm", "arg[1]=echo"]);
        expect((await runOnce(arts.b.name, ["echo", "first"])).lines).toEqual(["first", "exiting"]);
        const blobB = await forge(cri.cd, arts.a, arts.b, cacheDir(), K8S_NAMESPACE);
        const r = await runOnce(arts.a.name, A_ARGS.slice(1));
        console.log(`${mode} mode (containerd 1.6, CRI), A after the forgery: ${JSON.stringify(r)}`);
        expect({ code: r.code, lines: r.lines.slice(0, 3) }).toEqual({ code: 0, lines: A_OUTPUT });
        expect(log()).toContain(`ignoring the stored compile of ${arts.a.layers[0]!.digest}: ${blobB} was not compiled on this node`);
      },
      T,
    );
  });
}

describe("a forged precompiled label, ctr on the pinned containerd 2.x, both modes", () => {
  let shared: SharedEnv | undefined;
  let dir: string;
  let daemon: Daemon;
  let env: ShimEnv;
  let arts: ReturnType<typeof forgeryArtifacts>;

  beforeAll(async () => {
    shared = await sharedEnv({
      prefix: "/tmp/bwa2-",
      containerd: (d) => ({ binary: V2_BINARY, env: { BUNWASI_EXEC_ROOT: ownExecRoot(d) } }),
    });
    ({ dir, daemon, env } = shared);
    // 2.x's ctr runs artifacts with a plain OCI image config.
    arts = forgeryArtifacts(dir, "oci");
    for (const a of arts.archives) {
      const r = await env.cd.ctr(["images", "import", "--all-platforms", "--no-unpack", a]);
      if (r.code !== 0) throw new Error(`import ${a}: ${r.stderr}`);
    }
  }, 300_000);

  afterAll(() => shared?.stop(), T);

  for (const { mode, runtime } of MODES) {
    test(
      `${mode} mode: A's layer labelled with B's compile, the node cache empty: A is compiled and runs A`,
      async () => {
        const cacheDir = mode === "normal" ? join(dir, "exec", "cache") : join(dir, "d", "exec", "cache");
        const log = () => (mode === "normal" ? readFileSync(env.cd.logPath, "utf8") : daemon.log());
        const image = (x: BuiltArtifact) => x.name;
        const first = await env.run(image(arts.a), uid(`a-${mode}`), ["/a.wasm", "echo", "first"], { runtime });
        expect({ out: first.stdout.split("\n").slice(0, 2), err: first.stderr }).toEqual({
          out: ["arg[0]=/a.wasm", "arg[1]=echo"],
          err: "",
        });
        const b = await env.run(image(arts.b), uid(`b-${mode}`), ["/b.wasm", "echo", "first"], { runtime });
        expect(b.stdout).toBe("first\nexiting\n");
        const blobB = await forge(env.cd, arts.a, arts.b, cacheDir);
        const r = await env.run(image(arts.a), uid(`a-${mode}`), A_ARGS, { runtime });
        console.log(`${mode} mode (containerd 2.x, ctr), A after the forgery: ${JSON.stringify(r.stdout)}`);
        expect({ code: r.code, out: r.stdout.split("\n").slice(0, 3) }).toEqual({ code: 0, out: A_OUTPUT });
        expect(log()).toContain(`ignoring the stored compile of ${arts.a.layers[0]!.digest}: ${blobB} was not compiled on this node`);
      },
      T,
    );
  }
});
