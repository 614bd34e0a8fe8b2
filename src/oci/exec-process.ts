// The process of an Exec (`ctr task exec`, `kubectl exec`) as the OCI runtime runs it inside
// an existing container: its args[0] is looked up in the container (the exec's PATH and cwd,
// the container's rootfs and volumes) and given to the engine the way a container's
// entrypoint is (src/oci/bundle.ts):
//  - a wasm module (or WAT, or module.wasm#export): the process becomes our executor, started
//    through the loader from the container's executor mount, with the exec's args, env, cwd
//    and user. Only a wasm container has that mount.
//  - a native program: the process as containerd gave it.

import { dirname } from "node:path";
import type { Engine } from "../engines/engine.ts";
import { CACHE_MOUNT, EntrypointError, inspectEntrypoint, rootfsOf, wasmSpec } from "./bundle.ts";
import { type ExecutorDir, ensureExecutorDir, LOADER_NAME } from "./executor-dir.ts";
import { readSpec, type SpecProcess } from "./spec.ts";

export interface ExecProcessOptions {
  /** containerd's bundle of the container. */
  bundle: string;
  /** The bundle the runtime runs: the derived one for a wasm container, else `bundle`. */
  runtimeBundle: string;
  engine: Engine;
  process: SpecProcess;
  /** The executor directory the container mounts; default: ensureExecutorDir({ engine, stateRoot: executorStateRoot }). */
  executorDir?: ExecutorDir;
  /** Parent of exec/ for the default executor directory; default as ensureExecutorDir's. */
  executorStateRoot?: string;
}

export async function prepareExecProcess(o: ExecProcessOptions): Promise<{ process: SpecProcess; kind: "wasm" | "native" }> {
  const spec = await readSpec(o.bundle);
  const withExec = { ...spec, process: o.process };
  const { kind, entrypoint } = await inspectEntrypoint(o.bundle, withExec, o.engine);
  if (kind === "native") return { process: o.process, kind };
  if (o.runtimeBundle === o.bundle) {
    throw new EntrypointError(`${entrypoint.path}: a wasm module runs only in a container whose own process is one (this one is native)`);
  }
  // The container's executor mount and cache mount are where its derived bundle put them.
  const derived = await readSpec(o.runtimeBundle);
  const loader = derived.process.args[0] ?? "";
  if (!loader.endsWith(`/${LOADER_NAME}`)) throw new EntrypointError(`${o.runtimeBundle}: not a bundle of our executor`);
  const cache = (derived.mounts ?? []).find((m) => m.destination === CACHE_MOUNT);
  const writable = (cache?.options ?? []).includes("rw");
  const out = wasmSpec(withExec, {
    rootfs: rootfsOf(o.bundle, spec),
    module: entrypoint.path,
    ...(entrypoint.entry ? { entry: entrypoint.entry } : {}),
    exec: o.executorDir ?? (await ensureExecutorDir({ engine: o.engine, stateRoot: o.executorStateRoot })),
    mountPoint: dirname(loader),
    ...(cache?.source ? { cacheDir: cache.source, cacheWritable: writable } : {}),
  });
  return { process: out.process, kind };
}
