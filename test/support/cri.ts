// A private containerd with its CRI plugin on, driven with crictl the way the kubelet drives
// it: the compiled shims on PATH as the runtime of our handler (`wasmtime` for normal mode, or
// `wasmtimed` for shared mode, with the daemon's socket in containerd's environment), the test images and
// a local pause image imported into the k8s.io namespace (no registry here, so nothing is
// ever pulled). One per containerd version in test/e2e/cri.test.ts.
//
//   const cri = await criEnv({ binary: "/usr/bin/containerd" });
//   const pod = await cri.runPod("p1");                            // crictl runp --runtime wasmtime
//   const id = await cri.createContainer(pod, { metadata: { name: "c" }, image: { image: CRI_IMAGES.demo } });
//   await cri.crictlOk(["start", id]);
//   await cri.stop();                                              // pods removed, containerd stopped
//
// Pods use the host's network (NamespaceMode NODE): CNI plays no part, the CNI config dir is
// an empty one of ours (unless criEnv is given `cni`, for pods that ask for a network of their own). Each pod's cgroup parent is under /<cgroupRoot>, which stop() removes.

import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { busyboxImage, writeImageArchive } from "../../tools/image/index.ts";
import { type Containerd, type CtrResult, containerdMajor, startContainerd } from "./containerd.ts";
import { runcShimPath } from "./containerd-versions.ts";
import { REPO, RUNTIME, WASM } from "./shim-env.ts";

/** The CRI runtime handler (a RuntimeClass's `handler`) that maps to our shim (normal mode). */
export const HANDLER = "wasmtime";
/** The handler that maps to shared mode's thin shim (io.containerd.wasmtimed.v1, test/support/daemon.ts). */
export const SHARED_HANDLER = "wasmtimed";

/** The handler whose runtime has runtime options (a wrapper binary and its own root): `<handler>-opts`. */
export const optionsHandler = (handler: string) => `${handler}-opts`;
/** containerd's CRI namespace: images must be here for the CRI plugin to see them. */
export const K8S_NAMESPACE = "k8s.io";

export const CRI_IMAGES = {
  demo: "docker.io/library/wasi-demo-app:latest",
  tools: "docker.io/library/bunwasi-test-modules:latest",
  busybox: "docker.io/library/busybox:latest",
  pause: "docker.io/library/bunwasi-pause:latest",
} as const;

/** The crictl scripts/cri-tools.sh builds (its PINNED= line names the version). */
export function crictlPath(): string {
  const script = readFileSync(join(REPO, "scripts/cri-tools.sh"), "utf8");
  const v = /^PINNED=(\S+)/m.exec(script)?.[1];
  if (!v) throw new Error("scripts/cri-tools.sh has no PINNED= line");
  return join(REPO, "build/cri-tools", v, "bin/crictl");
}

/** The CRI plugins' settings for containerd 1.x (config version 2: one plugin) or 2.x (version 3: split). */
export function criPluginConfig(o: {
  major: number;
  pauseImage: string;
  cniDir: string;
  options?: RuntimeOptionsFixture;
  defaultRuntime?: string;
  /** Our handler and the runtime it maps to; default HANDLER → io.containerd.wasmtime.v1. */
  handler?: string;
  runtime?: string;
  /** More handlers and their runtime types (2.x: and sandboxers), beside runc and ours (one containerd for several of ours). */
  extraHandlers?: ExtraHandler[];
  /** 2.x: our handler's pods through containerd's Sandbox API (`shim`), with no pause image pulled. */
  sandboxer?: "shim";
}): string {
  const handler = o.handler ?? HANDLER;
  const runtime = o.runtime ?? RUNTIME;
  const q = (s: string) => JSON.stringify(s);
  if ((o.sandboxer || o.extraHandlers?.some((x) => x.sandboxer)) && o.major < 2)
    throw new Error("the shim sandboxer is configured per runtime in containerd 2.x only");
  const sandboxer = o.sandboxer ? sandboxerLines(o.sandboxer) : "";
  // Root may not lower its own oom_score_adj here (a container's sandbox asks for -998):
  // restrict_oom_score_adj clamps requests to containerd's own value instead of failing.
  // The streaming server (exec/attach/port-forward URLs) stays on loopback.
  const server = `    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"`;
  const runtimes = (prefix: string, extra = "") => `    [${prefix}.containerd]
      default_runtime_name = ${q(o.defaultRuntime ?? "runc")}${extra}
      [${prefix}.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
      [${prefix}.containerd.runtimes.${handler}]
        runtime_type = ${q(runtime)}${sandboxer}${o.options ? optionsRuntime(prefix, o.major, o.options, handler, runtime, sandboxer) : ""}${(
          o.extraHandlers ?? []
        )
          .map(
            (x) => `
      [${prefix}.containerd.runtimes.${x.handler}]
        runtime_type = ${q(x.runtime)}${x.sandboxer ? sandboxerLines(x.sandboxer) : ""}`,
          )
          .join("")}`;
  if (o.major < 2) {
    const p = `plugins."io.containerd.grpc.v1.cri"`;
    return `  [${p}]
${server}
    sandbox_image = ${q(o.pauseImage)}
    restrict_oom_score_adj = true
    [${p}.cni]
      bin_dir = ${q(join(o.cniDir, "bin"))}
      conf_dir = ${q(join(o.cniDir, "net.d"))}
${runtimes(p, '\n      snapshotter = "overlayfs"')}
`;
  }
  const rt = `plugins."io.containerd.cri.v1.runtime"`;
  const img = `plugins."io.containerd.cri.v1.images"`;
  return `  [plugins."io.containerd.grpc.v1.cri"]
${server}
  [${img}]
    snapshotter = "overlayfs"
    [${img}.pinned_images]
      sandbox = ${q(o.pauseImage)}
  [${rt}]
    restrict_oom_score_adj = true
    [${rt}.cni]
      bin_dirs = [${q(join(o.cniDir, "bin"))}]
      conf_dir = ${q(join(o.cniDir, "net.d"))}
${runtimes(rt)}
`;
}

/** A handler of a runtime type, with its sandboxer (2.x; default CRI's podsandbox). */
export interface ExtraHandler {
  handler: string;
  runtime: string;
  sandboxer?: "shim";
}

/** A runtime table's lines for a sandboxer: no pause image is pulled for its pods either. */
function sandboxerLines(sandboxer: string): string {
  return `\n        sandboxer = ${JSON.stringify(sandboxer)}\n        disable_pause_image_pull = true`;
}

/** Runtime options for optionsHandler(handler), and the files that show they were used. */
export interface RuntimeOptionsFixture {
  /** BinaryName: a script that logs its arguments to `log`, then execs runc. */
  binary: string;
  log: string;
  /** Root: the runtime's state root (the shim appends the namespace, as runc-v2). */
  root: string;
  /** The same options as a TOML file, for 1.x, whose runtimeoptions carry only config_path. */
  configPath: string;
}

/**
 * The runtime table of optionsHandler(handler), with the handler's sandboxer lines. containerd
 * 2.x hands a non-runc runtime its options table as TOML (config_body); 1.6 knows only
 * config_path, a TOML file.
 */
function optionsRuntime(
  prefix: string,
  major: number,
  o: RuntimeOptionsFixture,
  handler: string,
  runtime: string,
  sandboxer: string,
): string {
  const q = (s: string) => JSON.stringify(s);
  const options = major >= 2 ? `BinaryName = ${q(o.binary)}\n          Root = ${q(o.root)}` : `ConfigPath = ${q(o.configPath)}`;
  return `
      [${prefix}.containerd.runtimes.${optionsHandler(handler)}]
        runtime_type = ${q(runtime)}${sandboxer}
        [${prefix}.containerd.runtimes.${optionsHandler(handler)}.options]
          ${options}`;
}

/** Writes the wrapper and the TOML file of a RuntimeOptionsFixture under `dir`. */
function runtimeOptionsFixture(dir: string): RuntimeOptionsFixture {
  const runc = Bun.which("runc");
  if (!runc) throw new Error("runc is not on PATH");
  const o = {
    binary: join(dir, "wrapped-runc"),
    log: join(dir, "wrapped-runc.log"),
    root: join(dir, "runc-root"),
    configPath: join(dir, "runtime-options.toml"),
  };
  writeFileSync(o.binary, `#!/bin/sh\necho "$*" >> ${JSON.stringify(o.log)}\nexec ${JSON.stringify(runc)} "$@"\n`, { mode: 0o755 });
  writeFileSync(o.configPath, `BinaryName = ${JSON.stringify(o.binary)}\nRoot = ${JSON.stringify(o.root)}\n`);
  return o;
}

/** Every CRI plugin id of 1.x and 2.x; containerd.ts disables them unless told. */
const CRI_PLUGINS = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.cri.v1.images",
  "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox",
];

/** CRI's ContainerConfig as crictl reads it (JSON, snake_case). Only what the suite sets. */
export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  envs?: { key: string; value: string }[];
  log_path?: string;
  tty?: boolean;
  stdin?: boolean;
  stdin_once?: boolean;
  /** Volumes as the kubelet passes them: host directories bind-mounted into the container. */
  mounts?: { container_path: string; host_path: string; readonly?: boolean }[];
  linux?: {
    resources?: { memory_limit_in_bytes?: number; cpu_shares?: number; cpuset_cpus?: string };
    security_context?: {
      /** 0 RuntimeDefault, 1 Unconfined, 2 Localhost. */
      seccomp?: { profile_type: number };
      run_as_user?: { value: number };
      run_as_group?: { value: number };
      supplemental_groups?: number[];
      no_new_privs?: boolean;
      capabilities?: { drop_capabilities?: string[]; add_capabilities?: string[] };
      readonly_rootfs?: boolean;
    };
  };
}

export interface Pod {
  id: string;
  name: string;
  /** The PodSandboxConfig file given to runp (crictl create needs it again). */
  configPath: string;
  /** Where container logs go: log_directory/<container log_path>. */
  logDir: string;
  cgroupParent: string;
}

export interface CriEnv {
  cd: Containerd;
  dir: string;
  /** Our handler (runPod's default) and the runtime type it maps to. */
  handler: string;
  runtime: string;
  /** What handler optionsHandler(handler)'s runtime options name. */
  runtimeOptions: RuntimeOptionsFixture;
  major: number;
  crictlBinary: string;
  /** crictl against this containerd's socket. */
  crictl(args: string[], opts?: { timeoutMs?: number }): Promise<CtrResult>;
  /** The argv crictl() runs, for a crictl the caller spawns itself (attach with stdin). */
  crictlArgv(args: string[]): string[];
  /** crictl that must succeed; its stdout. */
  crictlOk(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  /** `crictl runp --runtime <handler>` a host-network pod (or, `podNetwork`, one with its own, through CNI); default our handler. */
  runPod(name: string, opts?: { handler?: string; podNetwork?: boolean }): Promise<Pod>;
  /** `crictl create --no-pull POD container.json pod.json`: the container's id. */
  createContainer(pod: Pod, config: ContainerConfig): Promise<string>;
  /** `crictl inspect` as JSON. */
  inspect(id: string): Promise<any>;
  /** containerd's restart (shims live on), then until the CRI plugin answers again. */
  restart(): Promise<void>;
  /** Polls `crictl inspect` until the container's state is `state` (CONTAINER_RUNNING, …). */
  waitState(id: string, state: string, timeoutMs?: number): Promise<any>;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function run(argv: string[], what: string): void {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${what} failed (${r.exitCode}): ${r.stderr.toString()}${r.stdout.toString()}`);
}

/** The pause binary: test/native/pause.c, static, so the image needs nothing else. */
function buildPause(out: string): void {
  run(["clang", "-static", "-Os", "-s", "-o", out, join(REPO, "test/native/pause.c")], "clang pause.c");
}

/** Kill what is left in a cgroup tree (every v1 controller, or the v2 tree) and remove it. */
export function removeCgroups(rel: string): void {
  const roots = ["/sys/fs/cgroup"];
  try {
    for (const c of readdirSync("/sys/fs/cgroup")) roots.push(join("/sys/fs/cgroup", c));
  } catch {}
  const walk = (d: string, f: (d: string) => void) => {
    let subs: string[] = [];
    try {
      subs = readdirSync(d, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => join(d, e.name));
    } catch {
      return;
    }
    for (const s of subs) walk(s, f);
    f(d);
  };
  for (const root of roots) {
    const top = join(root, rel);
    if (!existsSync(top)) continue;
    walk(top, (d) => {
      try {
        for (const pid of readFileSync(join(d, "cgroup.procs"), "utf8").split("\n").filter(Boolean)) {
          try {
            process.kill(Number(pid), "SIGKILL");
          } catch {}
        }
      } catch {}
    });
  }
  for (const root of roots) {
    const top = join(root, rel);
    if (!existsSync(top)) continue;
    walk(top, (d) => {
      try {
        rmdirSync(d);
      } catch {}
    });
  }
}

export interface CriEnvOptions {
  binary?: string;
  /**
   * The handler of pods that name none (default `runc`). The kubelet passes a pod's
   * RuntimeClass handler and, with no API server to read RuntimeClasses from, a static pod
   * has none: `wasmtime` here makes such pods ours (test/support/kubelet.ts).
   */
  defaultRuntime?: string;
  /** Our handler and its runtime type (default HANDLER, io.containerd.wasmtime.v1). */
  handler?: string;
  runtime?: string;
  /** More handlers of ours in the same containerd (e.g. shared mode's beside normal mode's, a handler with the shim sandboxer). */
  extraHandlers?: ExtraHandler[];
  /** 2.x: the handler's sandboxer (criPluginConfig's `sandboxer`); default CRI's podsandbox (a pause container). */
  sandboxer?: "shim";
  /** Extra environment for containerd and the shims it starts (shared mode: BUNWASI_DAEMON_SOCKET, a private BUNWASI_EXEC_ROOT). */
  env?: Record<string, string>;
  /** The CRI's registry `config_path`: a directory of <host>/hosts.toml (e.g. a local plain-HTTP registry). */
  registryConfigPath?: string;
  /**
   * A CNI network for pods that ask for one (runPod's `podNetwork`): the plugins of `binDir`
   * linked into our CNI bin dir and `conflist(cniDir)` as its only config. Default: none.
   */
  cni?: { binDir: string; conflist: (cniDir: string) => Record<string, unknown> };
}

/** Debian's containernetworking-plugins. */
export const CNI_BIN = "/usr/lib/cni";

/**
 * criEnv's `cni` for a bridge network of the test's own: `bridge` (≤ 15 bytes) on the host, which
 * takes the gateway address (so the test reaches pod IPs directly), and pod addresses from
 * `subnet` (host-local). `ipMasq`: NAT for pods' traffic that leaves the host (default none);
 * `portmap`: the portmap plugin after it (a pod's port mappings on the host; default none).
 */
export function bridgeCni(
  bridge: string,
  subnet: string,
  o: { ipMasq?: boolean; portmap?: boolean } = {},
): NonNullable<CriEnvOptions["cni"]> {
  return {
    binDir: CNI_BIN,
    conflist: (cniDir) => ({
      cniVersion: "0.4.0",
      name: `bunwasi-${bridge}`,
      plugins: [
        {
          type: "bridge",
          bridge,
          isGateway: true,
          ipMasq: o.ipMasq ?? false,
          ipam: { type: "host-local", ranges: [[{ subnet }]], dataDir: join(cniDir, "ipam") },
        },
        ...(o.portmap ? [{ type: "portmap", capabilities: { portMappings: true } }] : []),
      ],
    }),
  };
}

export async function criEnv(opts: CriEnvOptions = {}): Promise<CriEnv> {
  const crictlBinary = crictlPath();
  if (!existsSync(crictlBinary)) throw new Error(`${crictlBinary} is missing: run scripts/cri-tools.sh`);
  const binary = opts.binary ?? "/usr/bin/containerd";
  const major = containerdMajor(binary);
  const handler = opts.handler ?? HANDLER;
  const runtime = opts.runtime ?? RUNTIME;
  // 2.x's `runc` handler needs the runc shim of its own version.
  const path = runcShimPath(binary);
  for (const [script, what] of [
    ["scripts/build-wasm.sh", "build-wasm.sh"],
    ["scripts/build-shim.sh", "build-shim.sh"],
  ] as const)
    run(["bash", join(REPO, script)], what);
  path.unshift(join(REPO, "build/bin"));

  const dir = mkdtempSync("/tmp/bwc-"); // short: containerd's sockets live in here
  const cniDir = join(dir, "cni");
  for (const d of [join(cniDir, "bin"), join(cniDir, "net.d"), join(dir, "pods")]) mkdirSync(d, { recursive: true });
  if (opts.cni) {
    for (const p of readdirSync(opts.cni.binDir)) symlinkSync(join(opts.cni.binDir, p), join(cniDir, "bin", p));
    writeFileSync(join(cniDir, "net.d", "10-bunwasi.conflist"), JSON.stringify(opts.cni.conflist(cniDir), null, 2));
  }
  const cgroupRoot = `bunwasi-cri-${basename(dir)}`;
  const runtimeOptions = runtimeOptionsFixture(dir);

  const cd = await startContainerd({
    dir,
    binary,
    path,
    namespace: K8S_NAMESPACE,
    enablePlugins: CRI_PLUGINS,
    pluginConfig:
      criPluginConfig({
        major,
        pauseImage: CRI_IMAGES.pause,
        cniDir,
        options: runtimeOptions,
        handler,
        runtime,
        ...(opts.extraHandlers ? { extraHandlers: opts.extraHandlers } : {}),
        ...(opts.defaultRuntime ? { defaultRuntime: opts.defaultRuntime } : {}),
        ...(opts.sandboxer ? { sandboxer: opts.sandboxer } : {}),
      }) +
      (opts.registryConfigPath
        ? `  [plugins."${major >= 2 ? "io.containerd.cri.v1.images" : "io.containerd.grpc.v1.cri"}".registry]\n    config_path = ${JSON.stringify(opts.registryConfigPath)}\n`
        : ""),
    // CRI's first start loads more plugins than ctr needs; 2.x on a busy machine is slower.
    startTimeoutMs: 60_000,
    ...(opts.env ? { env: opts.env } : {}),
  });

  const endpoint = `unix://${cd.address}`;
  // crictl would also read /etc/crictl.yaml; an own (empty) config keeps the host's out.
  const crictlConfig = join(dir, "crictl.yaml");
  writeFileSync(crictlConfig, "");
  const crictlArgv = (args: string[]) => [
    crictlBinary,
    "--config",
    crictlConfig,
    "--runtime-endpoint",
    endpoint,
    "--image-endpoint",
    endpoint,
    "--timeout",
    "60s",
    ...args,
  ];
  const crictl = async (args: string[], o: { timeoutMs?: number } = {}): Promise<CtrResult> => {
    const p = Bun.spawn(crictlArgv(args), { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => p.kill("SIGKILL"), o.timeoutMs ?? 90_000);
    try {
      const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      return { code, stdout, stderr };
    } finally {
      clearTimeout(timer);
    }
  };
  const crictlOk = async (args: string[], o: { timeoutMs?: number } = {}) => {
    const r = await crictl(args, o);
    if (r.code !== 0)
      throw new Error(`crictl ${args.join(" ")} → ${r.code}: ${r.stderr.trim()}\n--- containerd log ---\n${cd.logTail(30)}`);
    return r.stdout;
  };

  // containerd answers `ctr version` before its CRI plugin is ready: 1.6 recovers pods and
  // containers in the background and answers "server is not initialized yet" until it is done.
  const waitCri = async () => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = await crictl(["version"], { timeoutMs: 10_000 });
      if (r.code === 0) return;
      if (Date.now() > deadline) throw new Error(`the CRI plugin did not answer: ${r.stderr.trim()}\n${cd.logTail(30)}`);
      await sleep(50);
    }
  };
  const restart = async () => {
    await cd.restart();
    await waitCri();
  };

  let podSeq = 0;
  const runPod: CriEnv["runPod"] = async (name, o = {}) => {
    const podDir = join(dir, "pods", name);
    const logDir = join(podDir, "logs");
    mkdirSync(logDir, { recursive: true });
    const cgroupParent = `/${cgroupRoot}/${name}`;
    const config = {
      metadata: { name, namespace: "bunwasi-cri", uid: `${name}-uid-${process.pid}-${podSeq++}`, attempt: 0 },
      log_directory: logDir,
      linux: {
        cgroup_parent: cgroupParent,
        // NODE (2): the host's network namespace, so no CNI network is set up for the pod;
        // POD (0): a namespace of its own, set up by the CNI plugins (criEnv's `cni`).
        security_context: { namespace_options: { network: o.podNetwork ? 0 : 2 } },
      },
    };
    const configPath = join(podDir, "pod.json");
    writeFileSync(configPath, JSON.stringify(config, null, 2));
    const id = (await crictlOk(["runp", "--runtime", o.handler ?? handler, configPath])).trim();
    return { id, name, configPath, logDir, cgroupParent };
  };

  let ctrSeq = 0;
  const createContainer: CriEnv["createContainer"] = async (pod, config) => {
    const path = join(dirname(pod.configPath), `${config.metadata.name}-${ctrSeq++}.json`);
    writeFileSync(path, JSON.stringify(config, null, 2));
    return (await crictlOk(["create", "--no-pull", pod.id, path, pod.configPath])).trim();
  };

  const inspect = async (id: string) => JSON.parse(await crictlOk(["inspect", "-o", "json", id]));
  const waitState: CriEnv["waitState"] = async (id, state, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    let last: any;
    while (Date.now() < deadline) {
      last = await inspect(id);
      if (last?.status?.state === state) return last;
      await sleep(50);
    }
    throw new Error(`container ${id}: state ${last?.status?.state} after ${timeoutMs} ms, wanted ${state}\n${cd.logTail(30)}`);
  };

  const stop = async () => {
    try {
      // What a test left running: stop and remove every pod (and so its containers) first,
      // so the shims shut down through containerd rather than by the harness's SIGKILL.
      if (cd.pid) await crictl(["rmp", "--force", "--all"], { timeoutMs: 60_000 });
    } finally {
      await cd.stop();
      removeCgroups(cgroupRoot);
    }
  };

  try {
    await waitCri();
    const pauseBin = join(dir, "pause");
    buildPause(pauseBin);
    const archives: [string, Parameters<typeof writeImageArchive>[1]][] = [
      [
        "pause.tar",
        { name: CRI_IMAGES.pause, files: [{ path: "/pause", source: pauseBin, mode: 0o755 }], config: { entrypoint: ["/pause"] } },
      ],
      [
        "demo.tar",
        {
          name: CRI_IMAGES.demo,
          files: [{ path: "/wasi-demo-app.wasm", source: join(WASM, "wasi-demo-app.wasm") }],
          config: { entrypoint: ["/wasi-demo-app.wasm"] },
        },
      ],
      [
        "tools.tar",
        {
          name: CRI_IMAGES.tools,
          files: [
            ...["busy", "cat", "env", "escape", "grow", "stdin-exit", "trap", "wasi-demo-app"].map((m) => ({
              path: `/${m}.wasm`,
              source: join(WASM, `${m}.wasm`),
            })),
            { path: "/tmp", dir: true as const, mode: 0o1777 },
          ],
          config: { entrypoint: ["/wasi-demo-app.wasm"], env: ["PATH=/"] },
        },
      ],
      ["busybox.tar", busyboxImage({ name: CRI_IMAGES.busybox })],
    ];
    for (const [file, spec] of archives) {
      const archive = join(dir, file);
      writeImageArchive(archive, spec);
      const r = await cd.ctr(["images", "import", archive], { namespace: K8S_NAMESPACE });
      if (r.code !== 0) throw new Error(`ctr -n ${K8S_NAMESPACE} images import ${file}: ${r.stderr}`);
    }
    // The CRI plugin learns of imported images from containerd's events; wait until it lists
    // all of them, so a create right after cannot race it.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const listed = (await crictlOk(["images", "-o", "json"])).toString();
      if (Object.values(CRI_IMAGES).every((n) => listed.includes(n))) break;
      if (Date.now() > deadline) throw new Error(`the CRI plugin does not list the imported images: ${listed}`);
      await sleep(100);
    }
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    cd,
    dir,
    major,
    handler,
    runtime,
    crictlBinary,
    crictl,
    crictlArgv,
    crictlOk,
    runPod,
    createContainer,
    inspect,
    restart,
    waitState,
    stop,
    runtimeOptions,
  };
}
