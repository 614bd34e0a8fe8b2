// OCI wasm artifacts through the CRI, as Kubernetes runs them: images whose config says
// architecture "wasm" and whose layers are wasm binaries (tools/image/artifact.ts), on
// Debian's containerd 1.6 and the pinned 2.x. `ctr run` refuses such images with any shim
// (1.6: "mismatched image rootfs and manifest layers"; 2.x: "unknown image config media
// type"), so crictl drives them. They are imported with `ctr images import --all-platforms
// --no-unpack`: the platform is wasm/wasip1, and there is nothing to unpack.
//
// What is proven, per containerd: a module artifact and a component artifact run; the
// compiled artifact is in the content store with its labels; the second container of the
// image compiles nothing; a new shim with an empty node-local cache takes the compile from
// the content store; a stale or corrupt stored compile is noticed and replaced; removing
// the image lets containerd's garbage collector remove the compile; bad artifacts (two wasm
// layers, a layer that is not valid wasm, a layer damaged on disk, a component importing
// what nobody provides) fail with errors that say so. Compiles are counted from the shim's
// log lines in containerd's log.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Labels } from "../../src/oci/artifact.ts";
import { type BuiltArtifact, WasmMediaType, writeArtifactArchive } from "../../tools/image/artifact.ts";
import { pinned2x } from "../support/containerd-versions.ts";
import { type CriEnv, criEnv, K8S_NAMESPACE, type Pod } from "../support/cri.ts";
import { ctrTasks } from "../support/ctr-tasks.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "../support/daemon.ts";
import { REPO, RUNTIME, type ShimEnv, shimEnv, WASM } from "../support/shim-env.ts";

const T = 180_000;

const V2 = pinned2x();
const CONTAINERDS = [
  { name: "containerd 1.6 (Debian)", binary: "/usr/bin/containerd" },
  { name: `containerd ${V2}`, binary: join(REPO, "build/containerd", V2, "bin/containerd") },
];

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const ENGINE = "wasmtime";

/** The artifacts every containerd gets: name → how it is built. */
function artifacts(dir: string): Record<string, { archive: string; built: BuiltArtifact }> {
  const out: Record<string, { archive: string; built: BuiltArtifact }> = {};
  const add = (key: string, spec: Parameters<typeof writeArtifactArchive>[1]) => {
    const archive = join(dir, `${key}.tar`);
    out[key] = { archive, built: writeArtifactArchive(archive, spec) };
  };
  const demo = join(WASM, "wasi-demo-app.wasm");
  add("module", { name: "bunwasi-art/module:1", layers: [{ source: demo }], entrypoint: ["/demo.wasm"] });
  add("component", {
    name: "bunwasi-art/component:1",
    layers: [{ source: join(WASM, "components/wasi-demo-app.wasm") }],
    entrypoint: ["/demo.wasm"],
  });
  // The other two layer media types and a plain OCI config (runwasi's oci-tar-builder writes that one).
  add("content-type", {
    name: "bunwasi-art/content-type:1",
    layers: [{ source: join(WASM, "env.wasm"), mediaType: WasmMediaType.content }],
    configMediaType: "oci",
    entrypoint: ["env.wasm"],
    env: ["GREETING=from-the-image"],
  });
  // Its own module, so that nothing else shares its blobs when the image is removed.
  add("gc", { name: "bunwasi-art/gc:1", layers: [{ source: join(WASM, "cat.wasm") }], entrypoint: ["/cat.wasm"] });
  add("two-layers", {
    name: "bunwasi-art/two-layers:1",
    layers: [{ source: demo }, { source: join(WASM, "env.wasm") }],
    entrypoint: ["/demo.wasm"],
  });
  // The wasm magic and version, then bytes no wasm section starts with.
  const garbage = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
  add("invalid", { name: "bunwasi-art/invalid:1", layers: [{ data: garbage }], entrypoint: ["/x.wasm"] });
  // Damaged on disk after the import (the test overwrites its blob): busy.wasm is in no other image.
  add("damaged", { name: "bunwasi-art/damaged:1", layers: [{ source: join(WASM, "busy.wasm") }], entrypoint: ["/busy.wasm"] });
  add("missing-import", {
    name: "bunwasi-art/missing-import:1",
    layers: [{ source: join(WASM, "components/missing-import.wasm") }],
    entrypoint: ["/m.wasm"],
  });
  return out;
}

for (const c of CONTAINERDS) {
  describe(`OCI wasm artifacts under ${c.name}`, () => {
    let cri: CriEnv;
    let execRoot: string;
    let arts: ReturnType<typeof artifacts>;
    let pod: Pod;
    let seq = 0;

    const log = () => readFileSync(cri.cd.logPath, "utf8");
    /** How many times a shim compiled `digest` (its log line per compile). */
    const compiles = (digest: string) =>
      log()
        .split("\n")
        .filter((l) => l.includes(`compiled ${digest} (${ENGINE})`)).length;
    const fromStore = (digest: string) =>
      log()
        .split("\n")
        .filter((l) => l.includes(`compiled ${digest} taken from the content store`)).length;
    /** `ctr content ls` as digest → labels. */
    const content = async (): Promise<Map<string, Record<string, string>>> => {
      const r = await cri.cd.ctr(["content", "ls"], { namespace: K8S_NAMESPACE });
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
    };
    const layerOf = (key: string) => arts[key]!.built.layers[0]!.digest;
    const wipeLocalCache = () => rmSync(join(execRoot, "cache"), { recursive: true, force: true });

    /** Create and start a container of `image` in `p`; its exit code and log once it has exited. */
    async function runOnce(p: Pod, key: string, args?: string[]): Promise<{ code: number; log: string; id: string }> {
      const logPath = `${key}-${seq++}.log`;
      const id = await cri.createContainer(p, {
        metadata: { name: `${key}-${seq}` },
        image: { image: arts[key]!.built.name },
        ...(args ? { args } : {}),
        log_path: logPath,
      });
      await cri.crictlOk(["start", id]);
      const st = await cri.waitState(id, "CONTAINER_EXITED", 60_000);
      return { code: st.status.exitCode, log: readFileSync(join(p.logDir, logPath), "utf8"), id };
    }
    /** Create and start, expecting start to fail: crictl's error text. */
    async function startFails(p: Pod, key: string): Promise<string> {
      const id = await cri.createContainer(p, { metadata: { name: `${key}-${seq++}` }, image: { image: arts[key]!.built.name } });
      const r = await cri.crictl(["start", id]);
      expect(r.code).not.toBe(0);
      return r.stderr;
    }
    /** CRI log lines' payloads ("<time> stdout F <text>"). */
    const lines = (criLog: string) =>
      criLog
        .split("\n")
        .filter(Boolean)
        .map((l) => l.split(" ").slice(3).join(" "));

    beforeAll(async () => {
      execRoot = mkdtempSync("/tmp/bwa-exec-");
      // A private data root: the compile cache these shims fill is this test's alone.
      cri = await criEnv({ binary: c.binary, env: { BUNWASI_EXEC_ROOT: execRoot } });
      arts = artifacts(cri.dir);
      for (const [key, a] of Object.entries(arts)) {
        const r = await cri.cd.ctr(["images", "import", "--all-platforms", "--no-unpack", a.archive], { namespace: K8S_NAMESPACE });
        if (r.code !== 0) throw new Error(`import ${key}: ${r.stderr}`);
      }
      const deadline = Date.now() + 20_000;
      for (;;) {
        const listed = await cri.crictlOk(["images", "-o", "json"]);
        if (Object.values(arts).every((a) => listed.includes(a.built.name))) break;
        if (Date.now() > deadline) throw new Error(`the CRI plugin does not list the artifacts: ${listed}`);
        await sleep(100);
      }
      pod = await cri.runPod("art");
    }, T);

    afterAll(async () => {
      await cri?.stop();
      if (execRoot) rmSync(execRoot, { recursive: true, force: true });
    }, T);

    test(
      "a module artifact runs: its layer is the program, args and env from the container",
      async () => {
        const r = await runOnce(pod, "module", ["echo", "hello", "artifact"]);
        expect(r.code).toBe(0);
        expect(lines(r.log)).toEqual(["hello artifact", "exiting"]);
        expect(compiles(layerOf("module"))).toBe(1);
      },
      T,
    );

    test(
      "the compile is in the content store, labelled for the garbage collector",
      async () => {
        const all = await content();
        const layer = all.get(layerOf("module"));
        expect(layer).toBeDefined();
        const stored = layer?.[Labels.precompiled(ENGINE)];
        expect(stored).toMatch(/^sha256:[0-9a-f]{64}$/);
        expect(layer?.[Labels.gcRef(ENGINE)]).toBe(stored as string);
        const blob = all.get(stored as string);
        expect(blob?.[Labels.source]).toBe(layerOf("module"));
        expect(blob?.[Labels.key]).toStartWith(`${layerOf("module").slice("sha256:".length)}-${ENGINE}-`);
        // The write's lease is gone: the layer's label alone keeps the blob.
        const leases = await cri.cd.ctr(["leases", "ls"], { namespace: K8S_NAMESPACE });
        expect(leases.code).toBe(0);
        expect(leases.stdout).not.toContain("bunwasi-");
      },
      T,
    );

    test(
      "the second container of the image compiles nothing",
      async () => {
        const r = await runOnce(pod, "module", ["echo", "again"]);
        expect(r.code).toBe(0);
        expect(lines(r.log)).toEqual(["again", "exiting"]);
        expect(compiles(layerOf("module"))).toBe(1);
      },
      T,
    );

    test(
      "a new shim with an empty node-local cache takes the compile from the content store",
      async () => {
        wipeLocalCache();
        const pod2 = await cri.runPod("art-second-shim");
        const r = await runOnce(pod2, "module", ["echo", "from", "the", "store"]);
        expect(r.code).toBe(0);
        expect(lines(r.log)).toEqual(["from the store", "exiting"]);
        expect(compiles(layerOf("module"))).toBe(1);
        expect(fromStore(layerOf("module"))).toBe(1);
        await cri.crictlOk(["rmp", "--force", pod2.id]);
      },
      T,
    );

    test(
      "a stale stored compile (the label names a blob compiled for something else) is recompiled and relabelled",
      async () => {
        const before = (await content()).get(layerOf("module"))?.[Labels.precompiled(ENGINE)] as string;
        // The image's config: in the store, but no compile of ours.
        const config = arts.module!.built.config.digest;
        const r0 = await cri.cd.ctr(["content", "label", layerOf("module"), `${Labels.precompiled(ENGINE)}=${config}`], {
          namespace: K8S_NAMESPACE,
        });
        expect(r0.code).toBe(0);
        wipeLocalCache();
        const r = await runOnce(pod, "module", ["echo", "stale"]);
        expect(r.code).toBe(0);
        expect(compiles(layerOf("module"))).toBe(2);
        expect(log()).toContain(`ignoring the stored compile of ${layerOf("module")}: ${config} was compiled for`);
        const after = (await content()).get(layerOf("module"));
        expect(after?.[Labels.precompiled(ENGINE)]).not.toBe(config);
        expect(after?.[Labels.precompiled(ENGINE)]).toBe(after?.[Labels.gcRef(ENGINE)] as string);
        expect(before).toMatch(/^sha256:/);
      },
      T,
    );

    test(
      "a corrupt stored compile (bytes changed on disk) is noticed, replaced and recompiled",
      async () => {
        const stored = (await content()).get(layerOf("module"))?.[Labels.precompiled(ENGINE)] as string;
        const file = join(cri.cd.root, "io.containerd.content.v1.content/blobs/sha256", stored.slice("sha256:".length));
        writeFileSync(file, flipByte(readFileSync(file), 0.5));
        wipeLocalCache();
        const r = await runOnce(pod, "module", ["echo", "corrupt"]);
        expect(r.code).toBe(0);
        expect(lines(r.log)).toEqual(["corrupt", "exiting"]);
        expect(compiles(layerOf("module"))).toBe(3);
        expect(log()).toContain(`${stored} is corrupt: its content hashes to`);
        // Written again: the blob under the layer's label now hashes to its digest.
        const now = (await content()).get(layerOf("module"))?.[Labels.precompiled(ENGINE)] as string;
        const fresh = readFileSync(join(cri.cd.root, "io.containerd.content.v1.content/blobs/sha256", now.slice("sha256:".length)));
        expect(`sha256:${new Bun.CryptoHasher("sha256").update(fresh).digest("hex")}`).toBe(now);
      },
      T,
    );

    test(
      "a component artifact runs (WASI preview 2)",
      async () => {
        const r = await runOnce(pod, "component", ["echo", "component", "artifact"]);
        expect(r.code).toBe(0);
        expect(lines(r.log)).toEqual(["component artifact", "exiting"]);
        expect(compiles(layerOf("component"))).toBe(1);
      },
      T,
    );

    test(
      "a restricted container (read-only rootfs, uid 65534, no capabilities) runs an artifact: the module is mounted beside the executor",
      async () => {
        const logPath = `restricted-${seq++}.log`;
        const id = await cri.createContainer(pod, {
          metadata: { name: `restricted-${seq}` },
          image: { image: arts.module!.built.name },
          args: ["echo", "restricted"],
          log_path: logPath,
          linux: {
            security_context: {
              readonly_rootfs: true,
              run_as_user: { value: 65534 },
              run_as_group: { value: 65534 },
              no_new_privs: true,
              capabilities: { drop_capabilities: ["ALL"] },
            },
          },
        });
        await cri.crictlOk(["start", id]);
        const st = await cri.waitState(id, "CONTAINER_EXITED", 60_000);
        expect(st.status.exitCode).toBe(0);
        expect(lines(readFileSync(join(pod.logDir, logPath), "utf8"))).toEqual(["restricted", "exiting"]);
      },
      T,
    );

    test(
      "exec into a running artifact container runs the artifact's module (crictl exec, sync and streaming); other names are refused",
      async () => {
        const id = await cri.createContainer(pod, {
          metadata: { name: `exec-${seq++}` },
          image: { image: arts.module!.built.name },
          log_path: `exec-${seq}.log`,
        });
        await cri.crictlOk(["start", id]);
        await cri.waitState(id, "CONTAINER_RUNNING");
        // The image's entrypoint names the module, as an exec into a rootfs image would.
        const sync = await cri.crictl(["exec", "--sync", id, "/demo.wasm", "echo", "from", "exec"]);
        expect({ code: sync.code, out: sync.stdout.trim().split("\n"), err: sync.stderr }).toEqual({
          code: 0,
          out: ["from exec", "exiting"],
          err: "",
        });
        const failing = await cri.crictl(["exec", "--sync", id, "demo.wasm", "exit", "3"]);
        expect(failing.code).not.toBe(0);
        expect(failing.stderr).toContain("command 'demo.wasm exit 3' exited with 3");
        const streaming = await cri.crictl(["exec", id, "/demo.wasm", "echo", "streamed"]);
        expect(streaming.code).toBe(0);
        expect(
          streaming.stdout
            .trim()
            .split("\n")
            .map((l) => l.trim()),
        ).toEqual(["streamed", "exiting"]);
        // A name that is neither a file of the container nor its module: refused, saying what works.
        const ls = await cri.crictl(["exec", "--sync", id, "ls", "/"]);
        expect(ls.code).not.toBe(0);
        expect(ls.stderr).toContain("ls: no such file in the container's rootfs");
        // (crictl prints the message Go-quoted: its quotes come escaped)
        expect(ls.stderr).toMatch(/exec it as \\*"\/demo\.wasm\\*" \(the container's args\[0\]\) or \\*"#<export>\\*"/);
        // The container ran on, undisturbed, and its exec processes are gone.
        expect((await cri.inspect(id)).status.state).toBe("CONTAINER_RUNNING");
        const init = (await cri.inspect(id)).info.pid as number;
        expect(init).toBeGreaterThan(0);
        expect(containerProcs(init)).toEqual([init]);
        await cri.crictlOk(["stop", "--timeout", "10", id]);
        expect((await cri.inspect(id)).status.exitCode).toBe(143);
        await cri.crictlOk(["rm", id]);
      },
      T,
    );

    test(
      "the other layer media type and a plain OCI image config: env from the image reaches the module",
      async () => {
        const r = await runOnce(pod, "content-type");
        expect(r.code).toBe(0);
        expect(lines(r.log)).toContain("arg[0]=env.wasm");
        expect(lines(r.log)).toContain("env:GREETING=from-the-image");
      },
      T,
    );

    test(
      "an artifact with two wasm layers fails to start, saying so",
      async () => {
        const err = await startFails(pod, "two-layers");
        expect(err).toContain("has 2 wasm layers");
        expect(err).toContain("a container runs exactly one");
      },
      T,
    );

    test(
      "a layer that is not valid wasm fails to start with the compiler's reason",
      async () => {
        const err = await startFails(pod, "invalid");
        expect(err).toContain(`wasm layer ${layerOf("invalid")} of image ${arts.invalid!.built.name} does not compile`);
      },
      T,
    );

    test(
      "a layer damaged in the content store fails to start: its bytes do not match its digest",
      async () => {
        const file = join(cri.cd.root, "io.containerd.content.v1.content/blobs/sha256", layerOf("damaged").slice("sha256:".length));
        writeFileSync(file, flipByte(readFileSync(file), 1));
        const err = await startFails(pod, "damaged");
        expect(err).toContain(`wasm layer ${layerOf("damaged")} of image ${arts.damaged!.built.name} is corrupt`);
      },
      T,
    );

    test(
      "a component importing what nobody provides exits 125 with the link error in its log",
      async () => {
        const r = await runOnce(pod, "missing-import");
        expect(r.code).toBe(125);
        expect(r.log).toContain("matching implementation was not found");
      },
      T,
    );

    test(
      "removing the image lets containerd's garbage collector remove the compile",
      async () => {
        const podGc = await cri.runPod("art-gc");
        const r = await runOnce(podGc, "gc", ["cat.wasm"]);
        expect(r.code).toBe(0);
        const stored = (await content()).get(layerOf("gc"))?.[Labels.precompiled(ENGINE)] as string;
        expect(stored).toMatch(/^sha256:/);
        expect((await content()).has(stored)).toBe(true);
        // Kept while the image is there, whatever collections run.
        await gcNow(cri);
        expect((await content()).has(stored)).toBe(true);
        await cri.crictlOk(["rmp", "--force", podGc.id]);
        await cri.crictlOk(["rmi", arts.gc!.built.name]);
        await gcNow(cri);
        const left = await content();
        expect(left.has(layerOf("gc"))).toBe(false);
        expect(left.has(stored)).toBe(false);
      },
      T,
    );
  });
}

// `ctr run` of an artifact, what each ctr does with it: 1.6's refuses to make a container of
// an image whose layers are not all rootfs layers; 1.7's and 2.x's refuse the wasm config
// media type but run an artifact with a plain OCI image config (runwasi's oci-tar-builder
// writes those) through our shim like any other image.
const CTRS = [
  { name: "1.6 (Debian)", binary: "/usr/bin/containerd", runs: false },
  { name: "v1.7.35", binary: join(REPO, "build/containerd/v1.7.35/bin/containerd"), runs: true },
  { name: V2, binary: join(REPO, "build/containerd", V2, "bin/containerd"), runs: true },
];
for (const c of CTRS) {
  describe(`ctr run of OCI wasm artifacts, containerd ${c.name}`, () => {
    let env: ShimEnv;
    const demo = join(WASM, "wasi-demo-app.wasm");
    beforeAll(async () => {
      env = await shimEnv({ binary: c.binary });
      for (const cfg of ["wasm", "oci"] as const) {
        const archive = join(env.dir, `${cfg}.tar`);
        writeArtifactArchive(archive, { name: `bunwasi-art/ctr-${cfg}:1`, layers: [{ source: demo }], configMediaType: cfg });
        const r = await env.cd.ctr(["images", "import", "--all-platforms", "--no-unpack", archive]);
        if (r.code !== 0) throw new Error(`import: ${r.stderr}`);
      }
    }, T);
    afterAll(async () => {
      await env?.stop();
    }, T);

    test(
      c.runs ? "the OCI-config artifact runs; the wasm config media type is refused by ctr" : "ctr refuses both configs",
      async () => {
        const oci = await env.run("docker.io/bunwasi-art/ctr-oci:1", "art-oci", ["/demo.wasm", "echo", "hi"]);
        const wasm = await env.run("docker.io/bunwasi-art/ctr-wasm:1", "art-wasm", ["/demo.wasm", "echo", "hi"]);
        if (c.runs) {
          expect({ code: oci.code, out: oci.stdout }).toEqual({ code: 0, out: "hi\nexiting\n" });
          expect(wasm.code).not.toBe(0);
          expect(wasm.stderr).toContain(`unknown image config media type ${WasmMediaType.config}`);
        } else {
          for (const r of [oci, wasm]) {
            expect(r.code).not.toBe(0);
            expect(r.stderr).toContain("mismatched image rootfs and manifest layers");
          }
        }
      },
      T,
    );

    if (c.runs)
      test(
        "ctr task exec into a running artifact container runs the artifact's module; other names are refused",
        async () => {
          const id = "art-exec";
          const log = join(env.dir, `${id}.log`);
          const run = await env.cd.ctr([
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            "--log-uri",
            `file://${log}`,
            "docker.io/bunwasi-art/ctr-oci:1",
            id,
            "/demo.wasm",
          ]);
          expect(run.code).toBe(0);
          const exec = (execId: string, args: string[]) =>
            env.cd.ctr(["task", "exec", "--exec-id", execId, id, ...args], { timeoutMs: 60_000 });
          const hi = await exec("e-hi", ["/demo.wasm", "echo", "hi from exec"]);
          expect({ code: hi.code, out: hi.stdout }).toEqual({ code: 0, out: "hi from exec\nexiting\n" });
          const three = await exec("e-three", ["/demo.wasm", "exit", "3"]);
          expect(three.code).toBe(3);
          const sh = await exec("e-sh", ["sh"]);
          expect(sh.code).not.toBe(0);
          expect(sh.stderr).toContain("sh: no such file in the container's rootfs");
          expect(sh.stderr).toContain('exec it as "/demo.wasm"');
          const t = ctrTasks(
            () => env.cd,
            () => env.dir,
          );
          expect((await t.tasks()).get(id)?.status).toBe("RUNNING");
          await t.ctrOk(["task", "kill", "-s", "SIGKILL", id]);
          await t.waitStatus(id, "STOPPED");
          expect(await t.deleteTask(id)).toBe(137);
          expect((await env.cd.ctr(["containers", "delete", id])).code).toBe(0);
        },
        T,
      );
  });
}

// Shared mode: the daemon runs an artifact's layer on one of its threads. Through `ctr run`
// on 2.x (an OCI-config artifact, the kind 2.x's ctr runs), the daemon's own compile cache
// and containerd's content store as in normal mode.
describe(`shared mode: an OCI wasm artifact through ctr run, containerd ${V2}`, () => {
  let dir: string;
  let daemon: Daemon;
  let env: ShimEnv;
  let built: BuiltArtifact;
  let funcs: BuiltArtifact;
  beforeAll(async () => {
    dir = mkdtempSync("/tmp/bwas-");
    daemon = await startDaemon(join(dir, "d"));
    env = await shimEnv({ binary: join(REPO, "build/containerd", V2, "bin/containerd"), env: daemon.env });
    const archive = join(env.dir, "shared.tar");
    built = writeArtifactArchive(archive, {
      name: "bunwasi-art/shared:1",
      layers: [{ source: join(WASM, "wasi-demo-app.wasm") }],
      configMediaType: "oci",
    });
    // funcs.wat: _start exits 1, the export `other` exits 7.
    const funcsArchive = join(env.dir, "funcs.tar");
    funcs = writeArtifactArchive(funcsArchive, {
      name: "bunwasi-art/funcs:1",
      layers: [{ source: join(WASM, "funcs.wasm") }],
      configMediaType: "oci",
      entrypoint: ["/funcs.wasm"],
    });
    for (const a of [archive, funcsArchive]) {
      const r = await env.cd.ctr(["images", "import", "--all-platforms", "--no-unpack", a]);
      if (r.code !== 0) throw new Error(`import ${a}: ${r.stderr}`);
    }
  }, T);
  afterAll(async () => {
    await env?.stop();
    await daemon?.stop("SIGKILL");
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, T);

  test(
    "runs twice, compiled once, the compile stored with its labels",
    async () => {
      for (const word of ["one", "two"]) {
        const r = await env.run(built.name, `shared-${word}`, ["/demo.wasm", "echo", word], { runtime: SHARED_RUNTIME });
        expect({ code: r.code, out: r.stdout, err: r.stderr }).toEqual({ code: 0, out: `${word}\nexiting\n`, err: "" });
      }
      const layer = built.layers[0]!.digest;
      const compiled = daemon
        .log()
        .split("\n")
        .filter((l) => l.includes(`compiled ${layer} (${ENGINE})`));
      expect(compiled).toHaveLength(1);
      const ls = await env.cd.ctr(["content", "ls"]);
      const line = ls.stdout.split("\n").find((l) => l.startsWith(layer)) ?? "";
      expect(line).toContain(`${Labels.gcRef(ENGINE)}=sha256:`);
    },
    T,
  );
  test(
    "#name alone as args[0] calls that export, in shared mode as in normal mode (one plan); the image's args[0] runs _start",
    async () => {
      for (const [mode, runtime] of [
        ["normal", RUNTIME],
        ["shared", SHARED_RUNTIME],
      ] as const) {
        const named = await env.run(funcs.name, `funcs-named-${mode}`, ["#other"], { runtime });
        expect({ mode, code: named.code, err: named.stderr }).toEqual({ mode, code: 7, err: "" });
        const path = await env.run(funcs.name, `funcs-path-${mode}`, ["/funcs.wasm#other"], { runtime });
        expect({ mode, code: path.code }).toEqual({ mode, code: 7 });
        const start = await env.run(funcs.name, `funcs-start-${mode}`, [], { runtime });
        expect({ mode, code: start.code }).toEqual({ mode, code: 1 });
      }
    },
    T,
  );
});

/** The processes of the container whose init is `pid`: its cgroup's (v1 memory controller, or v2). */
function containerProcs(pid: number): number[] {
  const lines = readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n");
  const v1 = lines.find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l));
  const dir = v1
    ? `/sys/fs/cgroup/memory${v1.slice(v1.indexOf(":/") + 1)}`
    : `/sys/fs/cgroup${(lines.find((l) => l.startsWith("0::")) ?? "0::").slice(3)}`;
  return readFileSync(join(dir, "cgroup.procs"), "utf8")
    .split("\n")
    .filter(Boolean)
    .map(Number)
    .sort((x, y) => x - y);
}

/** The bytes with the one at `at` (a fraction of the length) inverted: same size, another digest. */
function flipByte(bytes: Uint8Array, at: number): Uint8Array {
  const i = Math.min(bytes.length - 1, Math.floor(bytes.length * at));
  bytes[i] = (bytes[i] as number) ^ 0xff;
  return bytes;
}

/**
 * A garbage collection, finished before it returns: deleting a lease with --sync makes
 * containerd collect at once (what `ctr leases delete --sync` is for).
 */
async function gcNow(cri: CriEnv): Promise<void> {
  const created = await cri.cd.ctr(["leases", "create"], { namespace: K8S_NAMESPACE });
  expect(created.code).toBe(0);
  const id = created.stdout.trim().split(/\s+/)[0] as string;
  const r = await cri.cd.ctr(["leases", "delete", "--sync", id], { namespace: K8S_NAMESPACE });
  expect(r.code).toBe(0);
}
