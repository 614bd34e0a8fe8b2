// What a TaskHost does the same way in both modes: the normal shim server's host
// (src/shim/normal-host.ts) and a shared-mode sandbox's (src/daemon/sandbox-host.ts) differ only in
// how a container's bundle is prepared and where a wasm container runs. Rootfs mounts,
// metrics, and the runc a container runs with are the same code, here; so is a runc
// container itself (./runc-instance.ts).

import { traced } from "../common/trace.ts";
import type { Engine } from "../engines/engine.ts";
import type { ExitWatcher } from "../linux/exit-watcher.ts";
import type { Runc } from "../linux/runc.ts";
import { mountRootfsAsync, unmountRootfs } from "../oci/rootfs.ts";
import type { RuntimeOptions } from "../task/runtime-options.ts";
import { metricsAny } from "../task/stats.ts";
import type { Logger, TaskHost } from "../task/task-host.ts";
import { runtimeRoot, type ShimPaths } from "./paths.ts";
import type { RuncParts } from "./runc-instance.ts";
import { runtimeFor } from "./runtime.ts";

/** What the common calls need of the process around them. */
export interface HostBase extends RuncParts {
  paths: ShimPaths;
  log: Logger;
  watcher: ExitWatcher;
  engine: Engine;
  /** The OCI runtime binary (runc) unless a Create's runtime options name another. */
  runtimeBinary: string;
  cgroupV2: boolean;
}

/**
 * The runc a container of namespace `ns` runs with: the namespace's own --root, or what its
 * Create's runtime options name, as runc-v2 applies them (./runtime.ts: the same rules `delete`
 * uses after a crash).
 */
export function runcOf(b: Pick<HostBase, "paths" | "runtimeBinary">, ns: string, options: RuntimeOptions | null): Runc {
  return runtimeFor(ns, { binary: b.runtimeBinary, root: runtimeRoot(ns, b.paths.stateRoot) }, options);
}

export type CommonHostCalls = Pick<TaskHost, "mountRootfs" | "metrics" | "log">;

/** The TaskHost calls that do not depend on the mode. */
export function commonHostCalls(b: HostBase): CommonHostCalls {
  const step = b.step ?? (<T>(fn: () => T) => fn());
  return {
    // mount(2) and umount2(2) stay on this thread: each is one system call (umount2 detaches,
    // so it never waits for busy files), mount namespaces are per process so a thread would
    // gain nothing, and a worker would need its own FFI binding (src/oci/rootfs.ts).
    mountRootfs: async (bundle, mounts) => {
      await traced("mount rootfs", () => step(() => mountRootfsAsync(bundle, mounts), "mount rootfs"), {
        attributes: { "bunwasi.mounts": mounts.length },
      });
      return async () => {
        unmountRootfs(bundle);
      };
    },
    metrics: (stats) => metricsAny(stats, b.cgroupV2),
    log: b.log,
  };
}
