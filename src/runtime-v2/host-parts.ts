// What a TaskHost does the same way in both modes: the normal shim server's host
// (src/shim/serve.ts normalModeHost) and a shared-mode sandbox's (src/daemon/host.ts) differ
// only in where a wasm container runs and how its bundle is prepared. Native containers,
// exits, OOM kills, rootfs mounts, exec processes and metrics are the same code, here.

import type { Engine } from "../engines/engine.ts";
import type { ExitWatcher } from "../linux/exit-watcher.ts";
import { watchOom } from "../linux/oom.ts";
import { Runc } from "../linux/runc.ts";
import { prepareExecProcess } from "../oci/exec-process.ts";
import { mountRootfsAsync, unmountRootfs } from "../oci/rootfs.ts";
import type { Logger, TaskHost } from "../task/host.ts";
import type { RuntimeOptions } from "../task/runtime-options.ts";
import { metricsAny } from "../task/stats.ts";
import { runtimeRoot, type ShimPaths } from "./paths.ts";
import { runtimeFor } from "./runtime.ts";

/** What the common calls need of the process around them. */
export interface HostBase {
  paths: ShimPaths;
  log: Logger;
  watcher: ExitWatcher;
  engine: Engine;
  /** The OCI runtime binary (runc) unless a Create's runtime options name another. */
  runtimeBinary: string;
  cgroupV2: boolean;
  /** Wraps a step to time it in the debug log (normal mode's -debug); absent: runs it as is. */
  step?: <T>(fn: () => T, what: string) => T;
}

/** runc for namespace `ns`: its own --root, and another runc for a Create with runtime options. */
export function runcFor(
  b: Pick<HostBase, "paths" | "runtimeBinary">,
  ns: string,
): { root: string; runtime: Runc; with: (o: RuntimeOptions) => Runc } {
  const defaults = { binary: b.runtimeBinary, root: runtimeRoot(ns, b.paths.stateRoot) };
  return {
    root: defaults.root,
    runtime: new Runc(defaults),
    // containerd's runtime options, as runc-v2 applies them (./runtime.ts: the same rules
    // `delete` uses after a crash).
    with: (o) => runtimeFor(ns, defaults, o),
  };
}

export type CommonHostCalls = Pick<TaskHost, "watchExit" | "watchOom" | "kill" | "mountRootfs" | "prepareExec" | "metrics" | "log">;

/** The TaskHost calls that do not depend on the mode. */
export function commonHostCalls(b: HostBase): CommonHostCalls {
  const step = b.step ?? (<T>(fn: () => T) => fn());
  return {
    watchExit: (pid) => b.watcher.watch(pid).then((r) => ({ status: r.status, at: r.exitedAt })),
    // Live OOM notification fds are polled with the exit watcher's pidfds (no thread).
    watchOom: (pid, onKill) => watchOom(pid, { live: { watchReadable: (fd, cb) => b.watcher.watchReadable(fd, cb), onKill } }),
    // An exec process is our child (the subreaper's) until its exit is collected, so its pid
    // cannot name another process while its container can still be told to signal it.
    kill: (pid, signal) => process.kill(pid, signal),
    // mount(2) and umount2(2) stay on this thread: each is one system call (umount2 detaches,
    // so it never waits for busy files), mount namespaces are per process so a thread would
    // gain nothing, and a worker would need its own FFI binding (src/oci/rootfs.ts).
    mountRootfs: async (bundle, mounts) => {
      await step(() => mountRootfsAsync(bundle, mounts), "mount rootfs");
      return async () => {
        unmountRootfs(bundle);
      };
    },
    prepareExec: (target, process) =>
      step(
        () => prepareExecProcess({ bundle: target.bundle, runtimeBundle: target.runtimeBundle, engine: b.engine, process }),
        "prepare exec",
      ),
    metrics: (stats) => metricsAny(stats, b.cgroupV2),
    log: b.log,
  };
}
