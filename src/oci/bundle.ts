// Normal mode: from containerd's bundle to the bundle we hand the OCI runtime (docs/ARCHITECTURE.md,
// "One Create").
//
// prepare() asks the plan builder (./container-plan.ts) what runs the container:
//  - native (e.g. the pod's pause container): runc runs containerd's bundle unchanged;
//  - wasm: we write the container's run directory, <stateDir>/<id>/run/, holding the RunPlan
//    (plan.json; an artifact's module.wasm beside it), and a derived bundle under
//    <stateDir>/<id> whose config.json is containerd's with the process replaced by our
//    executor, started through the loader from a read-only bind mount of the executor
//    directory (./executor-dir.ts) and reading its plan from the run directory, mounted
//    read-only beside it. The module's compiled artifact, checked in the node's compile cache
//    before the container is created, is bound read-only into the run directory as one file
//    (module.cwasm): the container sees its own compile and no other module's (docs/
//    ARCHITECTURE.md, "Compiled code we trust"). The executor's own environment is only its VM settings
//    (src/common/vm-env.ts): the module's env is in the plan. Everything else (cwd, user,
//    namespaces, cgroupsPath, resources, seccomp, rlimits, capabilities, mounts, hooks) is
//    kept, so the module gets the same sandbox a native process would; the module's
//    filesystem is its WASI view (./wasi-view.ts).
//
// File access here is synchronous (docs/ARCHITECTURE.md, "Bun's thread pool").

import { accessSync, chownSync, constants, lstatSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { smallVmEntries } from "../common/vm-env.ts";
import type { Engine } from "../engines/engine.ts";
import { PLAN_FILE, type RunPlan } from "../engines/run-plan.ts";
import { EntrypointError, type EntrypointKind, planContainer, RUN_DIR, rootfsOf } from "./container-plan.ts";
import { EXECUTOR_MOUNT, type ExecutorDir, ensureExecutorDir, LOADER_NAME } from "./executor-dir.ts";
import { type PodNamespaces, wasmNamespaces } from "./pod-namespaces.ts";
import { readSpec, type Spec, SpecError, type SpecIdMapping, type SpecProcess } from "./spec.ts";
import { viewMountPoint, viewMounts } from "./wasi-view.ts";

export interface PrepareOptions {
  /** Container id (names the derived bundle dir). */
  id: string;
  /** containerd's bundle directory (config.json, rootfs/). */
  bundle: string;
  /** Where derived bundles go: <stateDir>/<id>. */
  stateDir: string;
  /** The engine that runs the modules (and whose files the executor directory holds). */
  engine: Engine;
  /** Executor directory to mount; default: ensureExecutorDir({ engine, stateRoot: executorStateRoot }). */
  executorDir?: ExecutorDir;
  /** Parent of exec/ for the default executor directory; default /var/lib/bunwasi. */
  executorStateRoot?: string;
  /**
   * Compiles the module into the node's compile cache, or finds it there and checks it
   * (./precompile.ts), before the container is created: the artifact's host path, which the
   * container gets as its one compiled module (COMPILED_MODULE in its run directory, bound
   * read-only), or undefined (the executor then compiles it itself).
   */
  compile?: (module: Pick<Prepared, "kind" | "module" | "moduleHost">) => Promise<string | undefined>;
  /** Extra executor flags (e.g. ["--stats"]). */
  executorFlags?: string[];
  /**
   * Asked only when args[0] is not in the rootfs: the wasm layer of the container's image if
   * it is an OCI wasm artifact (src/oci/artifact.ts), else undefined. Its bytes become the
   * module, in the run directory.
   */
  artifact?: () => Promise<{ bytes: Uint8Array } | undefined>;
  /**
   * The serving process's pid and its pod's network namespace: a wasm container's joins of
   * the process's namespaces (containerd's shim sandboxer names them) become the container's
   * own, but the network, which is the pod's (./pod-namespaces.ts).
   */
  pod?: PodNamespaces;
}

export interface Prepared {
  /** The bundle to give the OCI runtime (`runc create --bundle …`). */
  runtimeBundle: string;
  kind: EntrypointKind;
  /** Wasm: the module's path inside the container (run.module.path). */
  module?: string;
  /** Wasm: the module's path on the host (run.module.host). */
  moduleHost?: string;
  /** Wasm: the host directory it is opened inside (run.module.hostRoot). */
  moduleRoot?: string;
  /** Wasm: export to call ("module.wasm#func"); absent = _start. */
  entry?: string;
  /** The parsed containerd spec. */
  spec: Spec;
  /** Wasm: what the executor runs (also in the run directory's plan.json). */
  run?: RunPlan;
}

/**
 * In the run directory: the mount point of the module's compiled artifact (one file of the
 * node's compile cache, bound read-only), which the executor maps (--compiled).
 */
export const COMPILED_MODULE = "module.cwasm";
/** Where a container whose executor is mounted at `executorMount` sees its run directory (same rules for a read-only rootfs). */
export const runMount = (executorMount: string) => `${executorMount}-run`;

/** Is the directory on a read-only mount (or otherwise not writable by us)? */
function readOnlyDir(dir: string): boolean {
  // access(2) answers EROFS for W_OK on a read-only mount, without writing anything.
  try {
    accessSync(dir, constants.W_OK);
    return false;
  } catch {
    return true;
  }
}

/**
 * Where to mount the executor dir. /.bunwasi normally: runc creates the mount point in the
 * rootfs before it remounts root read-only (so `root.readonly: true` is fine). When the rootfs
 * itself is a read-only mount and has no /.bunwasi, runc cannot create it; then use
 * /dev/.bunwasi, a directory runc creates in the /dev tmpfs it mounts (if the spec has one).
 */
export function executorMountPoint(rootfs: string, spec: Spec): string {
  if (exists(join(rootfs, EXECUTOR_MOUNT)) || !readOnlyDir(rootfs)) return EXECUTOR_MOUNT;
  const devTmpfs = (spec.mounts ?? []).some((m) => m.destination === "/dev" && m.type === "tmpfs");
  if (devTmpfs) return `/dev${EXECUTOR_MOUNT}`;
  throw new EntrypointError(`rootfs ${rootfs} is read-only, has no ${EXECUTOR_MOUNT} and no /dev tmpfs to mount the executor on`);
}

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * `process` turned into our executor's, started through the loader from the executor mount
 * `mountPoint`, reading the plan at `planFile` (a path in the container). Its env is only the
 * executor's VM settings: nothing of the container's reaches the executor process. Everything
 * else of the process (cwd, user, rlimits, capabilities, terminal) is kept.
 */
export function executorProcess(
  process: SpecProcess,
  opts: {
    exec: ExecutorDir;
    mountPoint: string;
    planFile: string;
    /** Where the module's WASI view is mounted in the container (./wasi-view.ts). */
    viewAt: string;
    /** The module's compiled artifact, in the container (the executor maps it instead of compiling). */
    compiled?: string;
    executorFlags?: string[];
  },
): SpecProcess {
  const d = opts.mountPoint;
  const flags = ["--plan", opts.planFile];
  // The engine finds its files (executor().files) in the mounted directory.
  flags.push("--engine-dir", d);
  for (const [k, v] of Object.entries(opts.exec.engineOptions)) flags.push("--engine-opt", `${k}=${v}`);
  if (opts.compiled) flags.push("--compiled", opts.compiled);
  flags.push("--root-dir", opts.viewAt);
  flags.push(...(opts.executorFlags ?? []));
  return {
    ...process,
    env: smallVmEntries(),
    args: [`${d}/${LOADER_NAME}`, "--library-path", d, `${d}/${opts.exec.binaryName}`, ...opts.exec.subcommand, ...flags],
  };
}

/** Build the derived spec for a wasm container whose plan is `run` (pure: exported for tests). */
export function wasmSpec(
  spec: Spec,
  opts: {
    run: RunPlan;
    exec: ExecutorDir;
    mountPoint: string;
    /** Host path of the container's run directory (holding PLAN_FILE), mounted read-only. */
    runDir: string;
    /** Host path of the module's checked compiled artifact, bound read-only at COMPILED_MODULE in the run directory. */
    compiled?: string;
    executorFlags?: string[];
    /** See PrepareOptions.pod. */
    pod?: PodNamespaces;
  },
): Spec {
  const d = opts.mountPoint;
  const out: Spec = structuredClone(spec);
  if (opts.pod && out.linux?.namespaces) out.linux.namespaces = wasmNamespaces(out.linux.namespaces, opts.pod);
  out.root = { ...spec.root, path: opts.run.view.root };
  // The module's "/": the container without /proc, /sys and /dev (./wasi-view.ts).
  const viewAt = viewMountPoint(spec);
  const compiledAt = `${runMount(d)}/${COMPILED_MODULE}`;
  out.process = executorProcess(spec.process, {
    exec: opts.exec,
    mountPoint: d,
    planFile: `${runMount(d)}/${PLAN_FILE}`,
    viewAt,
    ...(opts.compiled ? { compiled: compiledAt } : {}),
    executorFlags: opts.executorFlags,
  });
  const mounts = [...(spec.mounts ?? [])];
  mounts.push({ destination: d, type: "bind", source: opts.exec.dir, options: ["rbind", "ro", "nosuid", "nodev"] });
  mounts.push({ destination: runMount(d), type: "bind", source: opts.runDir, options: ["rbind", "ro", "nosuid", "nodev"] });
  if (opts.compiled) {
    // One file, not the cache: the container sees no other module's compile. runc binds the
    // inode the path names when it creates the container, a moment after the shim checked it;
    // only root can put another file there meanwhile (the cache directory is root's, 0700).
    // Not noexec: the engine maps it as code (wasmtime's deserialize_file), so containers of
    // one module share its pages; a wasm module cannot execve, and the run directory is not in
    // its view.
    mounts.push({ destination: compiledAt, type: "bind", source: opts.compiled, options: ["bind", "ro", "nosuid", "nodev"] });
  }
  mounts.push(...viewMounts(opts.run.view, viewAt));
  out.mounts = mounts;
  return out;
}

/**
 * Writes `plan` as `dir/name` for the executor, whole (a temporary file renamed over it), readable
 * only by the process's user (`process.user` through the spec's id mappings): it holds the
 * module's env, as /proc/<pid>/environ does, which only that user reads.
 */
export function writePlanFile(dir: string, name: string, plan: RunPlan, spec: Spec): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const uid = hostId(plan.user.uid, spec.linux?.uidMappings, "uid");
  const gid = hostId(plan.user.gid, spec.linux?.gidMappings, "gid");
  const file = join(dir, name);
  const tmp = join(dir, `.${name}.${process.pid}`);
  writeFileSync(tmp, JSON.stringify(plan), { mode: 0o400 });
  if (uid !== 0 || gid !== 0) chownSync(tmp, uid, gid);
  renameSync(tmp, file);
}

/** The host id container id `id` is (the spec's mappings; none: the same). */
function hostId(id: number, mappings: SpecIdMapping[] | undefined, what: "uid" | "gid"): number {
  if (!mappings?.length) return id;
  for (const m of mappings) if (id >= m.containerID && id < m.containerID + m.size) return m.hostID + (id - m.containerID);
  throw new SpecError(`config.json: process.user ${what} ${id} is not mapped by linux.${what}Mappings`);
}

/**
 * Decide how to run the container and produce the bundle for the OCI runtime.
 * Native: containerd's bundle as is. Wasm: <stateDir>/<id>/config.json (written atomically)
 * and its run directory.
 * Throws SpecError / EntrypointError with messages fit for the Create reply.
 */
export async function prepare(opts: PrepareOptions): Promise<Prepared> {
  const spec = await readSpec(opts.bundle);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(opts.id))
    throw new SpecError(`container id ${JSON.stringify(opts.id)} is not a valid directory name`);
  const dir = join(opts.stateDir, opts.id);
  const runDir = join(dir, RUN_DIR);
  const rootfs = rootfsOf(opts.bundle, spec);
  // Decided once the container is known to be wasm (a native one mounts nothing of ours).
  let mountPoint: string | undefined;
  const executorMount = () => (mountPoint ??= executorMountPoint(rootfs, spec));
  const find = opts.artifact;
  const plan = await planContainer({
    bundle: opts.bundle,
    spec,
    engine: opts.engine,
    ...(find ? { artifact: { find, dir: runDir, seenAt: async () => runMount(executorMount()) } } : {}),
  });
  if (plan.kind === "native") return { runtimeBundle: opts.bundle, kind: "native", spec };

  const { run } = plan;
  const exec = opts.executorDir ?? (await ensureExecutorDir({ engine: opts.engine, stateRoot: opts.executorStateRoot }));
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  writePlanFile(runDir, PLAN_FILE, run, spec);
  const compiled = await opts.compile?.({ kind: "wasm", module: run.module.path, moduleHost: run.module.host });
  // The bind's mount point, inside the run directory's read-only bind: runc cannot make it there.
  if (compiled) writeFileSync(join(runDir, COMPILED_MODULE), "", { mode: 0o444 });
  const derived = wasmSpec(spec, {
    run,
    exec,
    mountPoint: executorMount(),
    runDir,
    ...(compiled ? { compiled } : {}),
    executorFlags: opts.executorFlags,
    ...(opts.pod ? { pod: opts.pod } : {}),
  });
  const tmp = join(dir, `.config.json.${process.pid}`);
  writeFileSync(tmp, JSON.stringify(derived, null, 2), { mode: 0o600 });
  renameSync(tmp, join(dir, "config.json"));
  return {
    runtimeBundle: dir,
    kind: "wasm",
    module: run.module.path,
    moduleHost: run.module.host,
    ...(run.module.hostRoot ? { moduleRoot: run.module.hostRoot } : {}),
    ...(run.module.entry ? { entry: run.module.entry } : {}),
    spec,
    run,
  };
}
