// A real kubelet (scripts/kubelet.sh builds it from the Go module proxy) running standalone
// on a private containerd with CRI (test/support/cri.ts) whose default runtime is our shim:
// no API server, no kubeconfig; pods are static pod manifests in a directory the kubelet
// watches. Everything lives under the CRI env's temp dir; stop() tears it all down. With
// `shared`, the default runtime is shared mode's (handler `wasmtimed`) and the env starts
// its own containerd-wasmtimed daemon (test/support/daemon.ts), one for all its pods.
//
//   const k = await kubeletEnv({ binary: "/usr/bin/containerd" });
//   k.addPod({ metadata: { name: "web" }, spec: { containers: [...] } });   // a manifest file
//   const p = await k.waitPod("web", (p) => p.state === "SANDBOX_READY");  // through crictl
//   k.removePod("web");
//   await k.stop();                                                          // even after a failure
//
// Why each setting in the KubeletConfiguration is what it is:
// - no cgroups of its own (cgroupsPerQOS: false, enforceNodeAllocatable: []): the kubelet then
//   gives pods no cgroup parent at all, and containerd puts each container in its default
//   cgroup, /k8s.io/<container id> (containerCgroups() below; stop() removes what is left);
// - the server, healthz on free loopback ports, no read-only port, webhook auth off: nothing
//   listens beyond loopback, and nothing needs an API server;
// - makeIPTablesUtilChains: false: the host's iptables stay as they are (pods use the host's
//   network, no CNI here);
// - KubeletCrashLoopBackOffMax (alpha) with a 2 s maximum: a restarted container comes back in
//   seconds instead of after 10, 20, 40 s … so restart tests wait for conditions, not minutes;
// - image GC only at 100 % disk: the locally imported images (nothing can be pulled) stay.
// The kubelet sets a few kernel sysctls when it starts (protectKernelDefaults: false, the
// default; true would make it refuse to start when they differ): stop() restores them.

import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { basename, dirname, join } from "node:path";
import { mountsUnder } from "./containerd.ts";
import { pinned2x } from "./containerd-versions.ts";
import { type CriEnv, criEnv, HANDLER, K8S_NAMESPACE, removeCgroups, SHARED_HANDLER } from "./cri.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "./daemon.ts";
import { REPO } from "./shim-env.ts";

/** The node name the kubelet runs as; a static pod `web` is named `web-<NODE>`. */
export const NODE = "bunwasi-node";
/** The namespace of every test pod. */
export const POD_NAMESPACE = "bunwasi-kubelet";

/** The kubelet scripts/kubelet.sh builds (its PINNED= line names the version). */
export function kubeletPath(): string {
  const script = readFileSync(join(REPO, "scripts/kubelet.sh"), "utf8");
  const v = /^PINNED=(\S+)/m.exec(script)?.[1];
  if (!v) throw new Error("scripts/kubelet.sh has no PINNED= line");
  return join(REPO, "build/kubelet", v, "bin/kubelet");
}

/** The containerds the kubelet suites run on: Debian's 1.6 and the pinned 2.x. */
export const CONTAINERDS = [
  { name: "containerd 1.6 (Debian)", binary: "/usr/bin/containerd" },
  { name: `containerd ${pinned2x()} (built from the module proxy)`, binary: join(REPO, "build/containerd", pinned2x(), "bin/containerd") },
];

export interface KubeletCase {
  name: string;
  binary: string;
  shared: boolean;
  mode: string;
  /** 2.x: our handler's pods through containerd's Sandbox API (no pause container). */
  sandboxer?: "shim";
}

/** What the kubelet suites run: each containerd in normal mode, then each in shared mode. */
export const KUBELET_CASES: KubeletCase[] = [false, true].flatMap((shared) =>
  CONTAINERDS.map((c) => ({ ...c, shared, mode: shared ? "shared mode, handler wasmtimed" : "normal mode, handler wasmtime" })),
);

/** The pinned 2.x in both modes again, its handlers with `sandboxer = "shim"` (kubelet.test.ts runs them). */
export const KUBELET_SHIM_CASES: KubeletCase[] = [false, true].map((shared) => ({
  ...CONTAINERDS[1]!,
  shared,
  mode: `${shared ? "shared mode, handler wasmtimed" : "normal mode, handler wasmtime"}, sandboxer "shim"`,
  sandboxer: "shim",
}));

/** The sysctls the kubelet's container manager sets when protectKernelDefaults is off. */
const KERNEL_TUNABLES = [
  "vm/overcommit_memory",
  "vm/panic_on_oom",
  "kernel/panic",
  "kernel/panic_on_oops",
  "kernel/keys/root_maxkeys",
  "kernel/keys/root_maxbytes",
];

/**
 * A container's (or sandbox's) cgroup directories, v1 (the controllers the tests look at) or v2:
 * with no cgroup parent from the kubelet, containerd's default `/<namespace>/<id>`.
 */
export function containerCgroups(id: string): string[] {
  const rel = join(K8S_NAMESPACE, id);
  if (existsSync("/sys/fs/cgroup/cgroup.controllers")) return [join("/sys/fs/cgroup", rel)];
  return ["memory", "cpu", "pids"].map((ctl) => join("/sys/fs/cgroup", ctl, rel));
}

/** A pod sandbox as `crictl pods -o json` lists it. */
export interface CriPod {
  id: string;
  state: string;
  metadata: { name: string; uid: string; namespace: string; attempt: number };
  labels: Record<string, string>;
}

/** A container as `crictl ps -a -o json` lists it. */
export interface CriContainer {
  id: string;
  podSandboxId: string;
  state: string;
  metadata: { name: string; attempt: number };
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface KubeletEnv {
  cri: CriEnv;
  /** Shared mode: the daemon that runs the pods' wasm containers (null in normal mode). */
  daemon: Daemon | null;
  /** Shared mode, once stop() has stopped the daemon (SIGTERM): its exit code or signal. */
  readonly daemonExit: number | string | null;
  /** The runtime type of the kubelet's pods (containerd's default runtime). */
  runtime: string;
  /** The kubelet's --root-dir. */
  root: string;
  /** Where the kubelet puts pod logs (podLogsDir). */
  podLogsDir: string;
  /** The static pod directory. */
  manifests: string;
  /** The kubelet's own log (stderr and stdout). */
  logPath: string;
  /** pid of the kubelet (0 once stopped). */
  readonly pid: number;
  /** Writes a static pod manifest; namespace, node-local defaults filled in. Returns the pod's name on the node. */
  addPod(pod: PodManifest): string;
  /** Removes a manifest: the kubelet then stops the pod. */
  removePod(name: string): void;
  /** The pod's sandboxes (newest first), through crictl. */
  sandboxes(name: string): Promise<CriPod[]>;
  /** A pod's containers of one name, every attempt the runtime still has, newest attempt first. */
  containers(name: string, container: string): Promise<CriContainer[]>;
  /** Polls until f is truthy; on timeout the error carries the kubelet's and containerd's log tails. */
  until<V>(what: string, f: () => V | Promise<V>, timeoutMs?: number): Promise<NonNullable<V>>;
  logTail(lines?: number): string;
  /**
   * Removes every manifest, waits until the kubelet has stopped every pod (no sandbox ready),
   * then stops the kubelet (SIGTERM; SIGKILL after 30 s). containerd stays up. Safe to call twice.
   */
  stopKubelet(): Promise<void>;
  /**
   * stopKubelet(), then the CRI env's stop (pods removed, containerd stopped, cgroups gone),
   * sysctls restored; shared mode: then the daemon stopped and its directory removed. Safe to call twice.
   */
  stop(): Promise<void>;
}

/** A static pod manifest (core/v1 Pod): only what the suites set. */
export interface PodManifest {
  metadata: { name: string; namespace?: string };
  spec: {
    hostNetwork?: boolean;
    restartPolicy?: "Always" | "OnFailure" | "Never";
    terminationGracePeriodSeconds?: number;
    containers: {
      name: string;
      image: string;
      imagePullPolicy?: "Never" | "IfNotPresent" | "Always";
      command?: string[];
      args?: string[];
      livenessProbe?: {
        exec: { command: string[] };
        periodSeconds?: number;
        failureThreshold?: number;
        initialDelaySeconds?: number;
        timeoutSeconds?: number;
      };
    }[];
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A loopback port nobody listens on right now (the kernel picks it). */
async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Whether a kubelet process is running (ours has exited by the time this is asked). */
function otherKubeletRunning(): boolean {
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0")[0]?.endsWith("/kubelet")) return true;
    } catch {}
  }
  return false;
}

function readSysctl(name: string): string | undefined {
  try {
    return readFileSync(join("/proc/sys", name), "utf8").trim();
  } catch {
    return undefined;
  }
}

export async function kubeletEnv(
  opts: { binary?: string; verbosity?: number; shared?: boolean; sandboxer?: "shim" } = {},
): Promise<KubeletEnv> {
  const binary = kubeletPath();
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run scripts/kubelet.sh`);
  const sysctls = new Map(KERNEL_TUNABLES.map((n) => [n, readSysctl(n)]));
  // The device manager's socket directory is fixed (/var/lib/kubelet/device-plugins, not under
  // --root-dir); remove what the kubelet made there when there was nothing before.
  const varLibKubelet = "/var/lib/kubelet";
  const hadVarLibKubelet = existsSync(varLibKubelet);

  // containerd makes /<namespace> in every cgroup hierarchy for the containers' default
  // cgroups and never removes it; stop() removes the empty ones it made.
  const hierarchies = existsSync("/sys/fs/cgroup/cgroup.controllers")
    ? ["/sys/fs/cgroup"]
    : readdirSync("/sys/fs/cgroup").map((c) => join("/sys/fs/cgroup", c));
  const newNamespaceCgroups = hierarchies.map((h) => join(h, K8S_NAMESPACE)).filter((d) => !existsSync(d));

  // Shared mode: one daemon for every pod of the env, in a directory of its own (containerd's
  // must exist first, and the daemon's socket goes into containerd's environment).
  const daemon = opts.shared ? await startDaemon(mkdtempSync("/tmp/bwkd-")) : null;
  let daemonExit: number | string | null = null;
  const stopDaemon = async () => {
    if (!daemon || daemonExit !== null) return;
    daemonExit = await daemon.stop("SIGTERM");
    rmSync(dirname(daemon.socket), { recursive: true, force: true });
  };
  let cri: CriEnv;
  try {
    cri = await criEnv({
      ...(opts.binary ? { binary: opts.binary } : {}),
      ...(daemon ? { handler: SHARED_HANDLER, runtime: SHARED_RUNTIME, env: daemon.env } : {}),
      defaultRuntime: daemon ? SHARED_HANDLER : HANDLER,
      ...(opts.sandboxer ? { sandboxer: opts.sandboxer } : {}),
    });
  } catch (e) {
    await stopDaemon();
    throw e;
  }
  const root = join(cri.dir, "kubelet");
  const podLogsDir = join(root, "pod-logs");
  const manifests = join(root, "manifests");
  const logPath = join(root, "kubelet.log");
  for (const d of [root, podLogsDir, manifests]) mkdirSync(d, { recursive: true });

  let proc: Bun.Subprocess | undefined;
  let stopped = false;
  const logTail = (lines = 40) => {
    try {
      return readFileSync(logPath, "utf8")
        .split("\n")
        .slice(-lines - 1)
        .join("\n");
    } catch {
      return "(no kubelet log)";
    }
  };

  const until: KubeletEnv["until"] = async (what, f, timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await f();
      if (v) return v as NonNullable<typeof v>;
      if (Date.now() > deadline)
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${what}\n--- kubelet log ---\n${logTail(30)}\n--- containerd log ---\n${cri.cd.logTail(15)}`,
        );
      await sleep(200);
    }
  };

  const podName = (name: string) => `${name}-${NODE}`;
  const sandboxes: KubeletEnv["sandboxes"] = async (name) => {
    const out = JSON.parse(await cri.crictlOk(["pods", "-o", "json", "--name", `^${podName(name)}$`, "--namespace", `^${POD_NAMESPACE}$`]));
    return ((out.items ?? []) as CriPod[]).sort((a, b) => b.metadata.attempt - a.metadata.attempt);
  };
  const containers: KubeletEnv["containers"] = async (name, container) => {
    const out = JSON.parse(
      await cri.crictlOk([
        "ps",
        "-a",
        "-o",
        "json",
        "--label",
        `io.kubernetes.pod.name=${podName(name)}`,
        "--label",
        `io.kubernetes.pod.namespace=${POD_NAMESPACE}`,
        "--name",
        `^${container}$`,
      ]),
    );
    return ((out.containers ?? []) as CriContainer[]).sort((a, b) => b.metadata.attempt - a.metadata.attempt);
  };

  const manifestPath = (name: string) => join(manifests, `${name}.json`);
  const addPod: KubeletEnv["addPod"] = (pod) => {
    const full = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { namespace: POD_NAMESPACE, ...pod.metadata },
      spec: {
        // No CNI here: only the host's network works, as in the crictl suite.
        hostNetwork: true,
        ...pod.spec,
        // Nothing can be pulled: every image was imported by test/support/cri.ts.
        containers: pod.spec.containers.map((c) => ({ imagePullPolicy: "Never", ...c })),
      },
    };
    // Written whole under a dot name first (the kubelet skips those), then renamed: the
    // kubelet never reads half a manifest.
    const tmp = join(manifests, `.${pod.metadata.name}.json`);
    writeFileSync(tmp, JSON.stringify(full, null, 2));
    renameSync(tmp, manifestPath(pod.metadata.name));
    return podName(pod.metadata.name);
  };
  const removePod: KubeletEnv["removePod"] = (name) => rmSync(manifestPath(name), { force: true });

  const stopKubelet = async () => {
    if (!proc || proc.exitCode !== null) return;
    // Let the kubelet stop its pods the way it does in production (manifest gone → kill with
    // the pod's grace period), then stop the kubelet itself.
    rmSync(manifests, { recursive: true, force: true });
    mkdirSync(manifests);
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline && proc.exitCode === null) {
      const r = await cri.crictl(["pods", "-o", "json", "--state", "ready"]);
      if (r.code !== 0 || (JSON.parse(r.stdout).items ?? []).length === 0) break;
      await sleep(250);
    }
    proc.kill("SIGTERM");
    const exited = await Promise.race([proc.exited.then(() => true), sleep(30_000).then(() => false)]);
    if (!exited) {
      proc.kill("SIGKILL");
      await proc.exited;
    }
    // The kubelet bind-mounts its root dir onto itself to make it rshared (so volume mounts
    // propagate to containers) and leaves that mount when it exits; it is the kubelet's, not
    // a pod's. Anything mounted below it would be a pod's, and is left for the tests to see.
    for (let i = 0; i < 8 && mountsUnder(root).includes(root); i++) {
      const r = Bun.spawnSync(["umount", root], { stdout: "pipe", stderr: "pipe" });
      if (r.exitCode !== 0) break;
    }
  };

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    // Every id this containerd knows, for the cgroups of anything a failed test left running.
    const ids: string[] = [];
    try {
      for (const args of [
        ["pods", "-q"],
        ["ps", "-a", "-q"],
      ] as const) {
        const r = await cri.crictl([...args]);
        if (r.code === 0) ids.push(...r.stdout.split("\n").filter(Boolean));
      }
    } catch {}
    try {
      await stopKubelet();
    } finally {
      // For a look after the run: BUNWASI_KUBELET_LOGS=DIR keeps a copy of the kubelet's log.
      const keep = process.env.BUNWASI_KUBELET_LOGS;
      if (keep && existsSync(logPath)) {
        mkdirSync(keep, { recursive: true });
        copyFileSync(logPath, join(keep, `kubelet-${basename(cri.dir)}.log`));
      }
      try {
        // What the kubelet left (stopped sandboxes, or running ones after a failure) goes here.
        await cri.stop();
      } finally {
        for (const id of ids) removeCgroups(join(K8S_NAMESPACE, id));
        for (const d of newNamespaceCgroups) {
          try {
            rmdirSync(d); // only when empty: another user's containers may be in it now
          } catch {}
        }
        for (const [name, value] of sysctls) {
          if (value === undefined || readSysctl(name) === value) continue;
          try {
            writeFileSync(join("/proc/sys", name), value);
          } catch {}
        }
        // Not while another kubelet (another suite's, run at the same time) uses it.
        if (!hadVarLibKubelet && !otherKubeletRunning()) {
          try {
            unlinkSync(join(varLibKubelet, "device-plugins/kubelet.sock"));
          } catch {}
          rmSync(varLibKubelet, { recursive: true, force: true });
        }
        // Last: containerd has shut every pod's sandbox down by now.
        await stopDaemon();
      }
    }
  };

  try {
    const [port, healthzPort] = [await freePort(), await freePort()];
    const config = {
      apiVersion: "kubelet.config.k8s.io/v1beta1",
      kind: "KubeletConfiguration",
      containerRuntimeEndpoint: `unix://${cri.cd.address}`,
      staticPodPath: manifests,
      fileCheckFrequency: "1s",
      syncFrequency: "5s",
      podLogsDir,
      address: "127.0.0.1",
      port,
      readOnlyPort: 0,
      healthzBindAddress: "127.0.0.1",
      healthzPort,
      authentication: { anonymous: { enabled: true }, webhook: { enabled: false }, x509: {} },
      authorization: { mode: "AlwaysAllow" },
      cgroupDriver: "cgroupfs",
      cgroupsPerQOS: false,
      enforceNodeAllocatable: [],
      failSwapOn: false,
      failCgroupV1: false,
      makeIPTablesUtilChains: false,
      imageGCHighThresholdPercent: 100,
      imageGCLowThresholdPercent: 99,
      featureGates: { KubeletCrashLoopBackOffMax: true },
      crashLoopBackOff: { maxContainerRestartPeriod: "2s" },
    };
    const configPath = join(root, "config.json");
    writeFileSync(configPath, JSON.stringify(config, null, 2));
    // One fd for both streams, so their lines interleave instead of overwriting each other.
    const log = openSync(logPath, "a");
    proc = Bun.spawn(
      [
        binary,
        `--config=${configPath}`,
        `--root-dir=${root}`,
        `--cert-dir=${join(root, "pki")}`,
        `--hostname-override=${NODE}`,
        `--v=${opts.verbosity ?? 3}`,
      ],
      { stdin: "ignore", stdout: log, stderr: log },
    );
    closeSync(log);
    // Ready when its healthz answers.
    await until(
      "the kubelet's healthz",
      async () => {
        if (proc?.exitCode !== null) throw new Error(`the kubelet exited (${proc?.exitCode})\n${logTail(40)}`);
        try {
          const r = await fetch(`http://127.0.0.1:${healthzPort}/healthz`);
          return r.ok && (await r.text()) === "ok";
        } catch {
          return false;
        }
      },
      60_000,
    );
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    cri,
    daemon,
    get daemonExit() {
      return daemonExit;
    },
    runtime: cri.runtime,
    root,
    podLogsDir,
    manifests,
    logPath,
    get pid() {
      return proc && proc.exitCode === null ? proc.pid : 0;
    },
    addPod,
    removePod,
    sandboxes,
    containers,
    until,
    logTail,
    stopKubelet,
    stop,
  };
}
