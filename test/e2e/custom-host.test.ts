// The shim as a library, proven under a real containerd: examples/custom-host builds
// containerd-shim-customhost-v1 (our wasmtime engine plus one host function,
// bunwasi:example/host log) with scripts/build-shim.sh. Under containerd 1.6 (Debian's) and
// 2.x (built by scripts/containerd-versions.sh), `ctr run --runtime io.containerd.customhost.v1`
// runs a module that calls it: the guest's text arrives prefixed on the container's stderr,
// exit 0. The wasmtime shim refuses the same module at link time (125), and the custom shim
// still runs ordinary WASI modules. Needs root, containerd and runc; never skips.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { IMAGES, REPO, RUNTIME, type ShimEnv, shimEnv } from "../support/shim-env.ts";

const CUSTOM = "io.containerd.customhost.v1";
const IMAGE = "docker.io/library/bunwasi-customhost-hello:latest";
const T = 60_000;

/** The 2.x that scripts/containerd-versions.sh pins (its PINNED=(…) line). */
function pinned2x(): string | undefined {
  const script = readFileSync(join(REPO, "scripts/containerd-versions.sh"), "utf8");
  return /^PINNED=\(([^)]*)\)/m
    .exec(script)?.[1]
    ?.trim()
    .split(/\s+/)
    .find((v) => v.startsWith("v2."));
}
const V2 = pinned2x();
const v2Binary = join(REPO, "build/containerd", V2 ?? "none", "bin/containerd");

test("prerequisites: root, runc, Debian's containerd, a pinned 2.x built by scripts/containerd-versions.sh", () => {
  expect(process.getuid?.()).toBe(0);
  expect(Bun.which("runc")).not.toBeNull();
  expect(existsSync("/usr/bin/containerd")).toBe(true);
  expect(V2).toBeDefined();
  expect(`${v2Binary}: ${existsSync(v2Binary)}`).toBe(`${v2Binary}: true`);
});

const setups: [string, string | undefined][] = [
  ["1.6 (Debian's)", undefined],
  [`${V2} (built from the module proxy)`, v2Binary],
];

for (const [label, binary] of setups) {
  describe(`containerd ${label}: containerd-shim-customhost-v1`, () => {
    let env: ShimEnv;

    beforeAll(async () => {
      env = await shimEnv(binary ? { binary } : {});
      const archive = join(env.dir, "customhost.tar");
      writeImageArchive(archive, {
        name: IMAGE,
        files: [{ path: "/hello.wat", source: join(REPO, "examples/custom-host/hello.wat"), mode: 0o644 }],
        config: { entrypoint: ["/hello.wat"] },
      });
      const r = await env.cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import ${archive}: ${r.stderr}`);
    }, 300_000);
    afterAll(async () => {
      if (!env) return;
      const ns = env.cd.namespace;
      await env.stop();
      for (const d of [runtimeRoot(ns), containerStateDir(ns)]) rmSync(d, { recursive: true, force: true });
    }, T);

    test(
      "the module's log call prints the guest's text with the host's prefix; exit 0",
      async () => {
        const r = await env.run(IMAGE, `ch-hello-${process.pid}`, ["/hello.wat"], { runtime: CUSTOM });
        expect(r.stderr).toBe("[customhost] hello from the guest\n");
        expect(r.stdout).toBe("");
        expect(r.code).toBe(0);
      },
      T,
    );

    test(
      "the wasmtime shim refuses the same module: link error, 125",
      async () => {
        const r = await env.run(IMAGE, `ch-plain-${process.pid}`, ["/hello.wat"], { runtime: RUNTIME });
        expect(r.stderr).toBe("link: unknown import: `bunwasi:example/host::log` has not been defined\n");
        expect(r.stdout).toBe("");
        expect(r.code).toBe(125);
      },
      T,
    );

    test(
      "the custom shim runs ordinary WASI modules too",
      async () => {
        const r = await env.run(IMAGES.demo, `ch-demo-${process.pid}`, ["/wasi-demo-app.wasm", "echo", "hi"], { runtime: CUSTOM });
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("hi\nexiting\n");
        expect(r.code).toBe(0);
      },
      T,
    );
  });
}
