// The process of an Exec (`ctr task exec`, `kubectl exec`) as the OCI runtime runs it inside
// an existing container: its args[0] is looked up in the container (the exec's PATH and cwd,
// the container's rootfs and volumes) and given to the engine the way a container's
// entrypoint is (src/oci/bundle.ts):
//  - a wasm module (or WAT, or module.wasm#export): the process becomes our executor, started
//    through the loader from the container's executor mount, with the exec's args, env, cwd
//    and user. Only a wasm container has that mount.
//  - a native program: the process as containerd gave it.
//  - in a container of an OCI wasm artifact (docs/ARCHITECTURE.md, "OCI wasm artifacts"),
//    whose module is the image's layer and not a file of its rootfs: an args[0] that names
//    that module runs it (see execArtifact below).

import { basename, dirname, posix } from "node:path";
import type { Engine, Entrypoint } from "../engines/engine.ts";
import {
  ARTIFACT_MODULE,
  artifactEntry,
  artifactModulePath,
  CACHE_MOUNT,
  EntrypointError,
  inspectEntrypoint,
  readHead,
  rootfsOf,
  splitEntry,
  wasmSpec,
} from "./bundle.ts";
import { type ExecutorDir, ensureExecutorDir, LOADER_NAME } from "./executor-dir.ts";
import { readSpec, type Spec, type SpecProcess } from "./spec.ts";

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
  // The container's executor, cache and artifact mounts are where its derived bundle put them.
  const derived = o.runtimeBundle === o.bundle ? undefined : await readSpec(o.runtimeBundle);
  let inspected: Awaited<ReturnType<typeof inspectEntrypoint>>;
  try {
    inspected = await inspectEntrypoint(o.bundle, withExec, o.engine);
  } catch (e) {
    if (!(e instanceof EntrypointError) || !derived) throw e;
    const art = await execArtifact(spec, o.process, derived, o.runtimeBundle);
    if (!art) throw e;
    if ("refused" in art) throw new EntrypointError(`${e.message} ${art.refused}`);
    inspected = { kind: "wasm", entrypoint: art.entrypoint };
  }
  const { kind, entrypoint } = inspected;
  if (kind === "native") return { process: o.process, kind };
  if (!derived) {
    throw new EntrypointError(`${entrypoint.path}: a wasm module runs only in a container whose own process is one (this one is native)`);
  }
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

/**
 * An exec into an artifact container whose args[0] is not a file of the container. The
 * artifact's module runs when args[0] names it as the container's own args[0] did (the same
 * string, the same path from each one's cwd, or its bare file name: the image's entrypoint,
 * or the pod's command), as its mount path, or not at all ("#name": only an export, as an
 * artifact's args[0] may be in runwasi). Anything else is refused with what would work:
 * running the module for any name (runwasi's rule for an artifact's own process) would turn
 * a mistyped command, or a shell a user expected, into a second copy of the workload.
 * runwasi itself refuses every exec ("exec is not supported").
 *
 * Returns undefined when the container is not an artifact's (the caller's error stands).
 */
async function execArtifact(
  spec: Spec,
  process: SpecProcess,
  derived: Spec,
  runtimeBundle: string,
): Promise<{ entrypoint: Entrypoint } | { refused: string } | undefined> {
  const loader = derived.process.args[0] ?? "";
  const mounted = artifactModulePath(dirname(loader));
  const mount = (derived.mounts ?? []).find((m) => m.destination === dirname(mounted));
  if (!mount?.source) return undefined;
  const host = posix.join(mount.source, ARTIFACT_MODULE);
  const arg0 = process.args[0] ?? "";
  const initArg0 = spec.process.args[0] ?? "";
  const own = splitEntry(initArg0).path;
  const path = splitEntry(arg0).path;
  const abs = (p: string, cwd: string) => posix.resolve(cwd || "/", p);
  const names =
    arg0.startsWith("#") ||
    path === mounted ||
    (!own.startsWith("#") &&
      path !== "" &&
      (path === own || abs(path, process.cwd) === abs(own, spec.process.cwd) || (!path.includes("/") && path === basename(own))));
  if (!names) {
    const as = own.startsWith("#") ? "" : `${JSON.stringify(own)} (the container's args[0]) or `;
    return {
      refused: `(the container runs an OCI wasm artifact, whose module is the image's layer: exec it as ${as}"#<export>")`,
    };
  }
  const entry = artifactEntry(arg0);
  // The module is kept in the container's work dir for the container's life.
  let head: Uint8Array;
  try {
    head = readHead(host);
  } catch (err) {
    throw new EntrypointError(`${runtimeBundle}: the artifact's module ${host} is gone (${String(err)})`);
  }
  return { entrypoint: { path: mounted, host, head, ...(entry ? { entry } : {}) } };
}
