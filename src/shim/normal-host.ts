// The TaskHost of a normal-mode shim server (one per pod, src/shim/serve.ts): every container
// runs under runc, a wasm container's init being our executor in a derived bundle
// (src/oci/bundle.ts); exits come from pidfds, mounts from libc (src/runtime-v2/).

import { dirname } from "node:path";
import { traced } from "../common/trace.ts";
import type { Engine } from "../engines/engine.ts";
import type { ExitWatcher } from "../linux/exit-watcher.ts";
import { artifactForContainer } from "../oci/artifact.ts";
import { prepare } from "../oci/bundle.ts";
import { precompile } from "../oci/precompile.ts";
import { commonHostCalls, runcOf } from "../runtime-v2/common-host-calls.ts";
import type { ShimFlags } from "../runtime-v2/flags.ts";
import { containerStateDir, runtimeRoot, type ShimPaths } from "../runtime-v2/paths.ts";
import { PodHolders } from "../runtime-v2/pod-holder.ts";
import { createRuncInstance } from "../runtime-v2/runc-instance.ts";
import { Publisher } from "../task/events.ts";
import { probeCgroupV2 } from "../task/stats.ts";
import type { Logger, NamespaceHost, TaskHost } from "../task/task-host.ts";

/** A namespace's host values, plus what the server tidies when it exits. */
export interface ServedNamespace extends NamespaceHost {
  publisher: Publisher;
  dirs: string[];
}

export interface HostWiring {
  flags: ShimFlags;
  paths: ShimPaths;
  log: Logger;
  watcher: ExitWatcher;
  /** The engine that runs wasm containers (bundle preparation and the compile cache go through it). */
  engine: Engine;
  runtimeBinary: string;
  ttrpcAddress: string;
  /** Filled as namespaces are first used, for the server's exit. */
  namespaces: Map<string, ServedNamespace>;
}

/** The TaskHost of a shim server: runc per namespace, pidfd exits, libc mounts, our bundles. */
export async function normalModeHost(w: HostWiring): Promise<TaskHost> {
  const { flags, paths, log } = w;
  const step = <T>(fn: () => T, what: string): T => {
    if (!flags.debug) return fn();
    const t0 = performance.now();
    const out = fn();
    const done = () => log(`${what} took ${(performance.now() - t0).toFixed(1)} ms`, "debug");
    // then(done, done), not finally(): a rejection stays the caller's to handle.
    if (out instanceof Promise) out.then(done, done);
    else done();
    return out;
  };
  const holders = new PodHolders({ log, pid: process.pid });
  const base = { paths, log, watcher: w.watcher, engine: w.engine, runtimeBinary: w.runtimeBinary, cgroupV2: await probeCgroupV2(), step };
  return {
    ...commonHostCalls(base),
    namespace: (ns) => {
      const stateDir = containerStateDir(ns, paths.stateRoot);
      const publisher = new Publisher(w.ttrpcAddress, ns, (m) => log(m, "warning"));
      // The namespace's folders go with their last container.
      const served: ServedNamespace = { stateDir, events: publisher, publisher, dirs: [stateDir, runtimeRoot(ns, paths.stateRoot)] };
      w.namespaces.set(ns, served);
      return served;
    },
    createInstance: async (req) => {
      // The plan of what runs (and, inside it, the compile): the derived bundle runc runs.
      const prepared = await traced("plan", () =>
        step(
          () =>
            prepare({
              id: req.id,
              bundle: req.bundle,
              // The derived bundle goes in the container's work dir, <stateDir>/<id>.
              stateDir: dirname(req.workDir),
              engine: w.engine,
              // Before runc creates the container: the checked compile is bound into it.
              compile: (m) => step(() => precompile(w.engine, m, paths.compileCacheDir, (msg) => log(msg, "warning")), "precompile"),
              // An entrypoint missing from the rootfs may be an OCI wasm artifact's layer.
              artifact: () =>
                artifactForContainer({
                  address: flags.address,
                  namespace: req.namespace,
                  id: req.id,
                  engine: w.engine,
                  cacheDir: paths.compileCacheDir,
                  log,
                }),
              // A pod of containerd's shim sandboxer names our namespaces as its own.
              pod: holders.pod,
            }),
          "prepare bundle",
        ),
      );
      const runc = runcOf(base, req.namespace, req.runtimeOptions);
      // A wasm container's derived bundle has namespaces of its own instead of ours (`pod`
      // above); a native one joins its pod's holder (a pod of containerd's shim sandboxer).
      const runtimeBundle =
        prepared.kind === "native"
          ? await holders.bundleFor({ ...req, stateDir: dirname(req.workDir), spec: prepared.spec, runc })
          : prepared.runtimeBundle;
      return createRuncInstance(runc, req, { runtimeBundle, kind: prepared.kind }, base);
    },
    adoptPod: (pod) => holders.adopt(pod),
    releasePod: (sandboxId) => holders.release(sandboxId),
  };
}
