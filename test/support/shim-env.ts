// Everything an end-to-end test of the shim needs: the compiled shim on a private
// containerd's PATH, and the test images imported. One per test file.

import { mkdtempSync, rmdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { busyboxImage, writeImageArchive } from "../../tools/image/index.ts";
import { type Containerd, type CtrOptions, type CtrResult, startContainerd } from "./containerd.ts";
import { runcShimPath } from "./containerd-versions.ts";

export const REPO = resolve(import.meta.dir, "../..");
export const WASM = join(REPO, "build/wasm");
export const RUNTIME = "io.containerd.wasmtime.v1";

/** Images every e2e test may use: name → what is in it. */
export const IMAGES = {
  demo: "docker.io/library/wasi-demo-app:latest",
  tools: "docker.io/library/bunwasi-test-modules:latest",
  busybox: "docker.io/library/busybox:latest",
} as const;

function buildShim(): string {
  const r = Bun.spawnSync(["bash", join(REPO, "scripts/build-shim.sh")], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`build-shim.sh failed: ${r.stderr.toString()}`);
  return join(REPO, "build/bin");
}

function buildWasm(): void {
  const r = Bun.spawnSync(["bash", join(REPO, "scripts/build-wasm.sh")], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`build-wasm.sh failed: ${r.stderr.toString()}`);
}

export interface ShimEnv {
  cd: Containerd;
  dir: string;
  /** `ctr run --rm --runtime wasmtime IMAGE ID ARGS…` */
  run(image: string, id: string, args: string[], opts?: CtrOptions & { runtime?: string; extra?: string[] }): Promise<CtrResult>;
  stop(): Promise<void>;
}

export interface ShimEnvOptions {
  /** containerd binary (default Debian's); a 2.x gets the runc shim built beside it on its PATH too. */
  binary?: string;
  /** Put our shims on containerd's PATH (default true); false for a containerd that must find another shim of the same name. */
  ourShims?: boolean;
  /** Extra PATH entries for containerd, after ours (e.g. a peer's shim linked under another name). */
  path?: string[];
  /** Extra environment for containerd and the shims it starts (e.g. BUNWASI_DAEMON_SOCKET). */
  env?: Record<string, string>;
  /** Where containerd lives (default a new /tmp/bwe-* directory). */
  dir?: string;
  /** Plugins to keep loaded that the private config disables (e.g. containerd's tracing ones). */
  enablePlugins?: string[];
}

export async function shimEnv(opts: ShimEnvOptions = {}): Promise<ShimEnv> {
  buildWasm();
  const bin = buildShim();
  // Short: containerd's sockets live in here.
  const dir = opts.dir ?? mkdtempSync("/tmp/bwe-");
  const path = [...(opts.ourShims === false ? [] : [bin]), ...(opts.path ?? []), ...runcShimPath(opts.binary ?? "/usr/bin/containerd")];
  const cd = await startContainerd({
    dir,
    path,
    ...(opts.binary ? { binary: opts.binary } : {}),
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.enablePlugins ? { enablePlugins: opts.enablePlugins } : {}),
  });
  try {
    const demo = join(dir, "demo.tar");
    writeImageArchive(demo, {
      name: IMAGES.demo,
      files: [{ path: "/wasi-demo-app.wasm", source: join(WASM, "wasi-demo-app.wasm") }],
      config: { entrypoint: ["/wasi-demo-app.wasm"] },
    });
    const tools = join(dir, "tools.tar");
    const modules = ["bigout", "busy", "cat", "env", "escape", "funcs", "grow", "tick", "trap", "wasi-demo-app"];
    writeImageArchive(tools, {
      name: IMAGES.tools,
      files: [
        ...modules.map((m) => ({ path: `/${m}.wasm`, source: join(WASM, `${m}.wasm`) })),
        { path: "/notes.txt", data: "not a program\n", mode: 0o644 },
        // A text module (not compiled) and entrypoints reached through symlinks.
        { path: "/hello.wat", source: join(REPO, "test/wasm/hello-text.wat"), mode: 0o644 },
        { path: "/bin/app.wasm", symlink: "/env.wasm" },
        { path: "/rel.wasm", symlink: "bin/../env.wasm" },
        { path: "/evil.wasm", symlink: "../../../../../usr/bin/runc" }, // must not reach the host's
        { path: "/tmp", dir: true as const, mode: 0o1777 },
      ],
      config: { entrypoint: ["/wasi-demo-app.wasm"], env: ["PATH=/"] },
    });
    const busybox = join(dir, "busybox.tar");
    writeImageArchive(busybox, busyboxImage({ name: IMAGES.busybox }));
    for (const archive of [demo, tools, busybox]) {
      const r = await cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import ${archive}: ${r.stderr}`);
    }
  } catch (e) {
    await cd.stop();
    throw e;
  }
  return {
    cd,
    dir,
    run: (image, id, args, o = {}) =>
      cd.ctr(["run", "--rm", "--runtime", o.runtime ?? RUNTIME, ...(o.extra ?? []), image, id, ...args], { timeoutMs: 60_000, ...o }),
    stop: () => cd.stop(),
  };
}

/**
 * Removes namespace `ns`'s folders under the shims' state root (runtimeRoot, containerStateDir)
 * if they are empty. A shim server removes them when it exits with them empty, and so does
 * containerd's `shim delete` after a shared-mode sandbox closed; a suite that stops first, or
 * drives a sandbox without containerd, calls this after its last container. Empty ones only:
 * anything in them is a leak for the suite to see.
 */
export function removeNamespaceDirs(ns: string): void {
  for (const d of [containerStateDir(ns), runtimeRoot(ns)]) {
    try {
      rmdirSync(d);
    } catch {}
  }
}
