// The TaskHost of one sandbox in the shared-mode daemon. Like the normal shim's
// (src/shim/normal-host.ts) in everything but where a wasm container runs: here on a thread
// of the daemon (./inproc-runtime.ts), made from its plan, instead of in an executor under
// runc. Native containers (the pod's pause, sidecars) are the same runc instances as in
// normal mode (src/runtime-v2/runc-instance.ts), with the daemon as their child subreaper.
// What is process-wide (the engine, the exit watcher, the compile cache, cgroup probing) is
// the daemon's and comes in through `DaemonShared`; the calls both modes make the same way
// (mounts, metrics, the runc of a container) are ../runtime-v2/common-host-calls.ts.

import { dirname, join } from "node:path";
import { traced } from "../common/trace.ts";
import type { Filled } from "../engines/cache.ts";
import type { Engine, Runner } from "../engines/engine.ts";
import type { RunPlan } from "../engines/run-plan.ts";
import type { ExitWatcher } from "../linux/exit-watcher.ts";
import { artifactForContainer } from "../oci/artifact.ts";
import { planContainer, RUN_DIR } from "../oci/container-plan.ts";
import { type PodNamespaces, podNetwork } from "../oci/pod-namespaces.ts";
import { precompile } from "../oci/precompile.ts";
import { readSpec, type Spec } from "../oci/spec.ts";
import { viewDir } from "../oci/wasi-view.ts";
import { commonHostCalls, runcOf } from "../runtime-v2/common-host-calls.ts";
import { containerStateDir, type ShimPaths } from "../runtime-v2/paths.ts";
import { PodHolders } from "../runtime-v2/pod-holder.ts";
import { createRuncInstance } from "../runtime-v2/runc-instance.ts";
import { type EventsConnections, Publisher } from "../task/events.ts";
import type { InstanceRequest } from "../task/instance.ts";
import type { Logger, NamespaceHost, TaskHost } from "../task/task-host.ts";
import { InProcessInstance } from "./inproc-runtime.ts";
import { readModule } from "./module-read.ts";

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
  /** The most WASI handles a wasm container may hold open (--max-open-files). */
  maxOpenFiles?: number;
  onRunning?: (delta: 1 | -1) => void;
  /** The memory limit of a wasm container whose spec sets none (--default-memory-limit). */
  defaultMemoryBytes?: number;
  /** What the daemon's metrics count as it happens; absent when it serves none (--metrics-address). */
  observe?: DaemonObserver;
  /** Marks a container's work dir as this daemon's, for the next one to sweep after a crash (./sweep.ts). */
  markWorkDir?: (c: { bundle: string; workDir: string }) => void;
  /** Resolves once a dead daemon's container of this id is cleaned up, if there is one (./sweep.ts). */
  swept?: (namespace: string, id: string) => Promise<void>;
  /**
   * The events connections every sandbox's publishers share, one per containerd: else each
   * sandbox holds one, an fd in the daemon and one in containerd per pod.
   */
  eventsConnections?: EventsConnections;
}

/** The events the daemon's metrics count (./metrics.ts); the rest they read when scraped. */
export interface DaemonObserver {
  /** A wasm Create's compile: found in the cache ("cache"), or compiled or fetched for it. */
  ensured(from: Filled): void;
  /** A running wasm container's run ended `seconds` after its first kill. */
  killExited(seconds: number): void;
}

/** A wasm container of a sandbox whose module has not exited (for the daemon's metrics). */
export interface LiveWasm {
  namespace: string;
  id: string;
  instance: InProcessInstance;
  /** The module's "/" in the daemon's mount namespace (its WASI view). */
  view: string;
}

/** One sandbox's namespaces, for its shutdown. */
export interface SandboxNamespace extends NamespaceHost {
  publisher: Publisher;
}

export interface SandboxHost extends TaskHost {
  /** Every wasm container of the sandbox still running gets `signal` (the daemon is stopping). */
  killWasm(signal: number): void;
  /** Its wasm containers whose module has not exited. */
  liveWasm(): Iterable<LiveWasm>;
}

export function sandboxHost(
  d: DaemonShared,
  ttrpcAddress: string,
  namespaces: Map<string, SandboxNamespace>,
  /** containerd's gRPC socket: where an OCI wasm artifact's layer is read (src/oci/artifact.ts). */
  containerdAddress = "",
): SandboxHost {
  /** The wasm containers not yet exited. */
  const running = new Map<InProcessInstance, LiveWasm>();
  const holders = new PodHolders({ log: d.log, pid: d.pid, ...(d.markWorkDir ? { markWorkDir: d.markWorkDir } : {}) });
  const inProcess = {
    runner: d.runner,
    pid: d.pid,
    onRunning: d.onRunning,
    log: (m: string) => d.log(m, "debug"),
    defaultMemoryBytes: d.defaultMemoryBytes,
    engine: d.engine,
    ...(d.maxOpenFiles ? { maxOpenFiles: d.maxOpenFiles } : {}),
    ...(d.observe ? { onKillExited: d.observe.killExited } : {}),
  };
  return {
    ...commonHostCalls(d),
    ...(d.markWorkDir
      ? {
          claimWorkDir: async (c: { namespace: string; id: string; bundle: string; workDir: string }) => {
            await d.swept?.(c.namespace, c.id);
            d.markWorkDir?.(c);
          },
        }
      : {}),
    namespace: (ns) => {
      const stateDir = containerStateDir(ns, d.paths.stateRoot);
      const publisher = new Publisher(ttrpcAddress, ns, (m) => d.log(m, "warning"), d.eventsConnections);
      const served: SandboxNamespace = { stateDir, events: publisher, publisher };
      namespaces.set(ns, served);
      return served;
    },
    createInstance: async (req) => {
      const wasm = await traced("plan", () => wasmPlan(d, req, containerdAddress, holders.pod));
      // Runtime options (BinaryName, Root, SystemdCgroup) as in normal mode: they choose the
      // runc of the pod's native containers; a wasm container runs in-process either way.
      if (!("plan" in wasm)) {
        const runc = runcOf(d, req.namespace, req.runtimeOptions);
        // In a pod of containerd's shim sandboxer it joins the pod's holder, not the daemon's namespaces.
        const runtimeBundle = await holders.bundleFor({ ...req, stateDir: dirname(req.workDir), spec: wasm.spec, runc });
        return createRuncInstance(runc, req, { runtimeBundle, kind: "native" }, d);
      }
      // The module's view is mounted and the compile cache filled (wasm.warm) inside this step.
      const inst = await traced("runtime create", () => InProcessInstance.create(wasm.plan, req, { ...inProcess, warm: wasm.warm }), {
        attributes: { "bunwasi.runtime": "in-process", "bunwasi.kind": "wasm" },
      });
      running.set(inst, { namespace: req.namespace, id: req.id, instance: inst, view: viewDir(req.workDir) });
      void inst.exited.then(() => running.delete(inst));
      return inst;
    },
    adoptPod: (pod) => holders.adopt(pod),
    releasePod: (sandboxId) => holders.release(sandboxId),
    killWasm: (signal) => {
      for (const inst of running.keys()) void inst.kill(signal, true).catch(() => {});
    },
    liveWasm: () => running.values(),
  };
}

/**
 * What a wasm container runs, from containerd's bundle (its rootfs mounted): the same plan as
 * normal mode's (../oci/container-plan.ts), and the compile that fills the cache for it; the
 * spec alone for a native container.
 */
async function wasmPlan(
  d: DaemonShared,
  req: InstanceRequest,
  containerdAddress: string,
  /** Under containerd's shim sandboxer: the pod's network is the namespace CRI made, not the daemon's it names. */
  pod: PodNamespaces,
): Promise<{ plan: RunPlan; warm: () => Promise<void> } | { spec: Spec }> {
  const { id, bundle, workDir } = req;
  const spec = await readSpec(bundle);
  if (spec.linux?.namespaces) spec.linux.namespaces = podNetwork(spec.linux.namespaces, pod);
  // An OCI wasm artifact's module is its image's layer, read through containerd and written to
  // the container's run directory (gone with the work dir); nothing is mounted into a
  // container here, so the plan names it by its host path.
  const plan = await planContainer({
    bundle,
    spec,
    engine: d.engine,
    ...(containerdAddress
      ? {
          artifact: {
            find: () =>
              artifactForContainer({
                address: containerdAddress,
                namespace: req.namespace,
                id,
                engine: d.engine,
                cacheDir: d.paths.compileCacheDir,
                log: d.log,
              }),
            dir: join(workDir, RUN_DIR),
          },
        }
      : {}),
  });
  if (plan.kind === "native") return { spec };
  const { module } = plan.run;
  const prepared = {
    runtimeBundle: workDir,
    kind: "wasm" as const,
    module: module.path,
    moduleHost: module.host,
    ...(module.hostRoot ? { moduleRoot: module.hostRoot } : {}),
    spec,
  };
  // Compiled once per daemon: the cache is filled before start; every run checks the entry
  // again right before it maps it (the engine's own check: Start may come much later). The
  // module is read off the main thread (./module-read.ts).
  const warm = async () =>
    void (await precompile(d.engine, prepared, d.paths.compileCacheDir, (m) => d.log(m, "warning"), readModule, d.observe?.ensured));
  return { plan: plan.run, warm };
}
