// The TaskHost of one sandbox in the shared-mode daemon. Like the normal shim's
// (src/shim/serve.ts normalModeHost) in everything but where a wasm container runs: here
// on a thread of the daemon (./inproc-runtime.ts) instead of in an executor under runc.
// Native containers (the pod's pause, sidecars) still go to runc, with the daemon as their
// child subreaper. What is process-wide (the engine, the exit watcher, the compile cache,
// cgroup probing) is the daemon's and comes in through `DaemonShared`; the calls both modes
// make the same way (native containers, exits, mounts, metrics) are ../runtime-v2/host-parts.ts.

import { basename, dirname, join } from "node:path";
import type { Engine, Runner } from "../engines/engine.ts";
import type { ExitWatcher } from "../linux/reaper.ts";
import { artifactForContainer } from "../oci/artifact.ts";
import { planContainer, RUN_DIR } from "../oci/container-plan.ts";
import { precompile } from "../oci/precompile.ts";
import { readSpec } from "../oci/spec.ts";
import { commonHostCalls, runcFor } from "../runtime-v2/host-parts.ts";
import { containerStateDir, type ShimPaths } from "../runtime-v2/paths.ts";
import { Publisher } from "../task/events.ts";
import type { Logger, NamespaceHost, TaskHost } from "../task/host.ts";
import { HybridRuntime, InProcessRuntime, notInShared } from "./inproc-runtime.ts";

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
  runtime: HybridRuntime;
  publisher: Publisher;
}

export function sandboxHost(
  d: DaemonShared,
  ttrpcAddress: string,
  namespaces: Map<string, SandboxNamespace>,
  /** containerd's gRPC socket: where an OCI wasm artifact's layer is read (src/oci/artifact.ts). */
  containerdAddress = "",
): TaskHost {
  // prepareBundle is told the container's working directory, <stateDir>/<id>: the state dir
  // names the namespace, and so the runtime that will be asked to create it.
  const byStateDir = new Map<string, SandboxNamespace>();
  const common = commonHostCalls(d);
  return {
    ...common,
    namespace: (ns) => {
      const stateDir = containerStateDir(ns, d.paths.stateRoot);
      const publisher = new Publisher(ttrpcAddress, ns, (m) => d.log(m, "warning"));
      const inProcess = new InProcessRuntime({
        runner: d.runner,
        pid: d.pid,
        onRunning: d.onRunning,
        log: (m) => d.log(m, "debug"),
      });
      const runc = runcFor(d, ns);
      const served: SandboxNamespace = {
        runtime: new HybridRuntime(inProcess, runc.runtime),
        // Runtime options (BinaryName, Root, SystemdCgroup) as in normal mode: they choose the
        // runc of the pod's native containers; a wasm container runs in-process either way.
        runtimeWith: (o) => new HybridRuntime(inProcess, runc.with(o)),
        stateDir,
        events: publisher,
        publisher,
      };
      namespaces.set(ns, served);
      byStateDir.set(stateDir, served);
      return served;
    },
    prepareBundle: async (id, bundle, workDir) => {
      const spec = await readSpec(bundle);
      // The same plan as normal mode's (../oci/container-plan.ts). An OCI wasm artifact's module
      // is its image's layer, read through containerd and written to the container's run
      // directory (gone with the work dir); nothing is mounted into a container here, so the
      // plan names it by its host path.
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
                    namespace: basename(dirname(workDir)),
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
      if (plan.kind === "native") return { runtimeBundle: bundle, kind: "native" };
      const ns = byStateDir.get(dirname(workDir));
      if (!ns) throw new Error(`no namespace for ${workDir}`);
      const plans = ns.runtime.inProcess.plans;
      // The working directory names the container uniquely: the key its plan is found by.
      plans.set(workDir, plan.run);
      const { module } = plan.run;
      const prepared = { runtimeBundle: workDir, kind: "wasm" as const, module: module.path, moduleHost: module.host, spec };
      // Compiled once per daemon: the cache is filled before start, every run deserializes.
      const warm = () => precompile(d.engine, prepared, d.paths.compileCacheDir, (m) => d.log(m, "warning"));
      // A Create that fails before the runtime's create (stdio, console) leaves no plan behind.
      return { runtimeBundle: workDir, kind: "wasm", inProcess: true, warm, discard: () => plans.delete(workDir) };
    },
    // Exec into a native container through runc as in normal mode; a wasm container here has
    // no process to enter (refused before anything is prepared for it).
    prepareExec: (target, process) =>
      target.kind === "wasm" ? Promise.reject(notInShared(target.id, "Exec")) : common.prepareExec(target, process),
    // Native containers' OOM kills as in normal mode; a wasm container here (its "pid" is
    // the daemon's) has no cgroup of its own to watch.
    watchOom: (pid, onKill) => (pid === d.pid ? Promise.resolve(null) : common.watchOom!(pid, onKill)),
  };
}
