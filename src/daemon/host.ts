// The TaskHost of one sandbox in the shared-mode daemon. Like the normal shim's
// (src/shim/normal-host.ts) in everything but where a wasm container runs: here on a thread
// of the daemon (./inproc-runtime.ts), made from its plan, instead of in an executor under
// runc. Native containers (the pod's pause, sidecars) are the same runc instances as in
// normal mode (src/runtime-v2/runc-instance.ts), with the daemon as their child subreaper.
// What is process-wide (the engine, the exit watcher, the compile cache, cgroup probing) is
// the daemon's and comes in through `DaemonShared`; the calls both modes make the same way
// (mounts, metrics, the runc of a container) are ../runtime-v2/host-parts.ts.

import { stat, writeFile } from "node:fs/promises";
import { isAbsolute, join, normalize, posix } from "node:path";
import type { Engine, Runner } from "../engines/engine.ts";
import type { ExitWatcher } from "../linux/exit-watcher.ts";
import { artifactForContainer } from "../oci/artifact.ts";
import { EntrypointError, inspectEntrypoint, rootfsOf, splitEntry } from "../oci/bundle.ts";
import { precompile } from "../oci/precompile.ts";
import { readSpec, type SpecMount } from "../oci/spec.ts";
// The same kernel filesystems normal mode keeps out of a module's view: here they would be the daemon's.
import { HIDDEN_FROM_WASI, isUnder } from "../oci/wasi-view.ts";
import { commonHostCalls, runcOf } from "../runtime-v2/host-parts.ts";
import { containerStateDir, type ShimPaths } from "../runtime-v2/paths.ts";
import { createRuncInstance } from "../runtime-v2/runc-instance.ts";
import { Publisher } from "../task/events.ts";
import type { Logger, NamespaceHost, TaskHost } from "../task/host.ts";
import type { InstanceRequest } from "../task/instance.ts";
import { InProcessInstance, type InProcessPlan } from "./inproc-runtime.ts";

/** What every sandbox of a daemon shares. */
export interface DaemonShared {
  paths: ShimPaths;
  log: Logger;
  watcher: ExitWatcher;
  /** The engine, with the daemon's counting compiler (./compiles.ts). */
  engine: Engine;
  /** The daemon's one Runner, loaded on first use. */
  runner: () => Promise<Runner>;
  runtimeBinary: string;
  cgroupV2: boolean;
  pid: number;
  onRunning?: (delta: 1 | -1) => void;
}

/** One sandbox's namespaces, for its shutdown. */
export interface SandboxNamespace extends NamespaceHost {
  publisher: Publisher;
}

export interface SandboxHost extends TaskHost {
  /** Every wasm container of the sandbox still running gets `signal` (the daemon is stopping). */
  killWasm(signal: number): void;
}

export function sandboxHost(
  d: DaemonShared,
  ttrpcAddress: string,
  namespaces: Map<string, SandboxNamespace>,
  /** containerd's gRPC socket: where an OCI wasm artifact's layer is read (src/oci/artifact.ts). */
  containerdAddress = "",
): SandboxHost {
  /** The wasm containers not yet exited. */
  const running = new Set<InProcessInstance>();
  const inProcess = { runner: d.runner, pid: d.pid, onRunning: d.onRunning, log: (m: string) => d.log(m, "debug") };
  return {
    ...commonHostCalls(d),
    namespace: (ns) => {
      const stateDir = containerStateDir(ns, d.paths.stateRoot);
      const publisher = new Publisher(ttrpcAddress, ns, (m) => d.log(m, "warning"));
      const served: SandboxNamespace = { stateDir, events: publisher, publisher };
      namespaces.set(ns, served);
      return served;
    },
    createInstance: async (req) => {
      const wasm = await wasmPlan(d, req, containerdAddress);
      // Runtime options (BinaryName, Root, SystemdCgroup) as in normal mode: they choose the
      // runc of the pod's native containers; a wasm container runs in-process either way.
      if (wasm === null)
        return createRuncInstance(runcOf(d, req.namespace, req.runtimeOptions), req, { runtimeBundle: req.bundle, kind: "native" }, d);
      const inst = await InProcessInstance.create(wasm.plan, req, { ...inProcess, warm: wasm.warm });
      running.add(inst);
      void inst.exited.then(() => running.delete(inst));
      return inst;
    },
    killWasm: (signal) => {
      for (const inst of running) void inst.kill(signal, true).catch(() => {});
    },
  };
}

/**
 * What a wasm container runs, from containerd's bundle (its rootfs mounted), and the compile
 * that fills the cache for it; null for a native container.
 */
async function wasmPlan(
  d: DaemonShared,
  req: InstanceRequest,
  containerdAddress: string,
): Promise<{ plan: InProcessPlan; warm: () => Promise<void> } | null> {
  const { id, bundle, workDir } = req;
  const spec = await readSpec(bundle);
  const { kind, entrypoint: ep } = await inspectEntrypoint(bundle, spec, d.engine).catch(async (e) => {
    // Not in the rootfs: an OCI wasm artifact's module is its image's wasm layer. The
    // daemon runs it from a file in the container's working directory (gone with it).
    if (!(e instanceof EntrypointError) || !containerdAddress) throw e;
    const art = await artifactForContainer({
      address: containerdAddress,
      namespace: req.namespace,
      id,
      engine: d.engine,
      cacheDir: d.paths.compileCacheDir,
      log: d.log,
    });
    if (!art) throw e;
    const host = join(workDir, "artifact.wasm");
    await writeFile(host, art.bytes, { mode: 0o600 });
    const { entry } = splitEntry(spec.process.args[0] ?? "");
    return { kind: "wasm" as const, entrypoint: { path: host, host, head: art.bytes.subarray(0, 4096), ...(entry ? { entry } : {}) } };
  });
  if (kind === "native") return null;
  const limit = spec.linux?.resources?.memory?.limit;
  const plan: InProcessPlan = {
    modulePath: ep.host,
    ...(ep.entry ? { entry: ep.entry } : {}),
    args: spec.process.args,
    env: lastWins(spec.process.env ?? []),
    rootfs: rootfsOf(bundle, spec),
    rootReadOnly: spec.root.readonly === true,
    cwd: spec.process.cwd || "/",
    preopens: await volumePreopens(spec.mounts ?? []),
    // The pod's network namespace, where a wasi:http service listens (CRI puts the
    // sandbox's path in each container's spec); none: the daemon's (see InProcessPlan.netns).
    ...netnsOf(spec),
    // As in normal mode: the cgroup limit becomes the store's limit on linear memory.
    ...(typeof limit === "number" && limit > 0 ? { memoryLimitBytes: limit } : {}),
  };
  const prepared = { runtimeBundle: workDir, kind: "wasm" as const, module: ep.path, moduleHost: ep.host, spec };
  // Compiled once per daemon: the cache is filled before start, every run deserializes.
  const warm = () => precompile(d.engine, prepared, d.paths.compileCacheDir, (m) => d.log(m, "warning"));
  return { plan, warm };
}

/**
 * The spec's bind-mounted directories (volumes: emptyDir, hostPath, `ctr run --mount`), as
 * WASI preopens at their destination; read-only if the mount is. Other mounts (proc, sysfs,
 * tmpfs /dev, mqueue) are the container's kernel views, which an in-process module has
 * none of; bind mounts of files (resolv.conf, hosts) cannot be preopened and are skipped,
 * as is anything from or onto /proc, /sys and /dev.
 */
export async function volumePreopens(mounts: SpecMount[]): Promise<{ hostPath: string; guestPath: string; readOnly: boolean }[]> {
  const out: { hostPath: string; guestPath: string; readOnly: boolean }[] = [];
  for (const m of mounts) {
    const opts = m.options ?? [];
    const bind = m.type === "bind" || opts.includes("bind") || opts.includes("rbind");
    if (!bind || !m.source || !m.destination || !isAbsolute(m.source) || !isAbsolute(m.destination)) continue;
    const dest = posix.normalize(m.destination).replace(/\/+$/, "");
    const source = normalize(m.source);
    if (!dest || dest === "/" || HIDDEN_FROM_WASI.some((d) => isUnder(dest, d) || isUnder(source, d))) continue;
    try {
      if (!(await stat(source)).isDirectory()) continue;
    } catch {
      continue;
    }
    out.push({ hostPath: source, guestPath: dest, readOnly: opts.includes("ro") });
  }
  return out;
}

/** The spec's network namespace path, if it names one (`{ netns }`), else nothing. */
export function netnsOf(spec: { linux?: { namespaces?: { type: string; path?: string }[] } }): { netns?: string } {
  const path = spec.linux?.namespaces?.find((n) => n.type === "network")?.path;
  return path ? { netns: path } : {};
}

/**
 * The environment as the container's process would see it: runc keeps only the last entry of
 * a repeated key (libcontainer's prepareEnv), and CRI repeats a key the image and the pod
 * both set (image env first). Order: where each key's last entry is.
 */
export function lastWins(env: string[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (let i = env.length - 1; i >= 0; i--) {
    const e = env[i] as string;
    const eq = e.indexOf("=");
    const key = eq < 0 ? e : e.slice(0, eq);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(e);
  }
  return out.reverse();
}
