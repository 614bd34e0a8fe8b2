// The process of an Exec (`ctr task exec`, `kubectl exec`), planned once for both modes
// (planExec): its args[0] is looked up in the container (the exec's PATH and cwd, the
// container's rootfs and volumes) and given to the engine the way a container's entrypoint is
// (./container-plan.ts):
//  - a wasm module (or WAT, or module.wasm#export): a RunPlan of its own (the same rules as the
//    container's, with the exec's args, env, cwd and user). Normal mode (prepareExecProcess)
//    makes the process our executor, started through the loader from the container's executor
//    mount, with that plan written to the container's run directory as exec-<digest>.json (the
//    same exec, a probe run every few seconds, writes the same file once); the shared-mode
//    daemon runs the plan on a thread (src/daemon/inproc-runtime.ts). Only a wasm container
//    runs one.
//  - a native program: the process as containerd gave it (normal mode: runc exec; a wasm
//    container in the daemon has no process to run it in, and refuses it).
//  - in a container of an OCI wasm artifact (docs/ARCHITECTURE.md, "OCI wasm artifacts"),
//    whose module is the image's layer and not a file of its rootfs: an args[0] that names
//    that module runs it (see execArtifact below).

import { existsSync, readFileSync } from "node:fs";
import { basename, dirname, posix } from "node:path";
import type { Engine } from "../engines/engine.ts";
import { PLAN_FILE, parseRunPlan, type RunModule, type RunPlan } from "../engines/run-plan.ts";
import { COMPILED_MODULE, executorProcess, runMount, writePlanFile } from "./bundle.ts";
import { ARTIFACT_MODULE, artifactEntry, EntrypointError, inspectEntrypoint, runPlan, splitEntry } from "./container-plan.ts";
import { type ExecutorDir, ensureExecutorDir, LOADER_NAME } from "./executor-dir.ts";
import { readSpec, type Spec, type SpecProcess } from "./spec.ts";
import { viewMountPoint } from "./wasi-view.ts";

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

/**
 * What an exec runs (both modes): native, or a wasm module with its RunPlan, made by the
 * container's rules (./container-plan.ts) with the exec's process in the container's spec.
 */
export type ExecPlan = { kind: "native"; path: string } | { kind: "wasm"; run: RunPlan; spec: Spec };

/** The module of a container's OCI wasm artifact, as an exec may name it. */
export interface ArtifactOfContainer {
  /** The module on the host (the container's run directory), and the directory it is opened in. */
  host: string;
  hostRoot: string;
  /** Where the exec sees it (normal mode: the run directory's mount; shared mode: `host`). */
  path: string;
}

export interface ExecPlanInput {
  /** containerd's bundle of the container (its rootfs mounted), and its config.json. */
  bundle: string;
  spec: Spec;
  engine: Engine;
  process: SpecProcess;
  /**
   * Set for a wasm container (absent: a native one, where a module has nothing to run it).
   * `artifact` answers whether its module is an OCI wasm artifact's layer; asked only when the
   * exec's args[0] is not a file of the container.
   */
  wasm?: { artifact: () => ArtifactOfContainer | undefined };
}

/**
 * The one planner of an exec: args[0] looked up in the container (the exec's PATH and cwd, the
 * rootfs and volumes); a native program runs as given; a module (or WAT, or module#export) gets
 * a RunPlan, only in a wasm container; in an artifact's container, an args[0] that names its
 * module runs it (see execArtifact). Throws EntrypointError with the reason otherwise.
 */
export async function planExec(o: ExecPlanInput): Promise<ExecPlan> {
  const withExec: Spec = { ...o.spec, process: o.process };
  let module: RunModule;
  try {
    const inspected = await inspectEntrypoint(o.bundle, withExec, o.engine);
    if (inspected.kind === "native") return { kind: "native", path: inspected.entrypoint.path };
    const ep = inspected.entrypoint;
    if (!o.wasm) {
      throw new EntrypointError(`${ep.path}: a wasm module runs only in a container whose own process is one (this one is native)`);
    }
    module = { host: ep.host, hostRoot: inspected.root, path: ep.path, ...(ep.entry ? { entry: ep.entry } : {}) };
  } catch (e) {
    if (!(e instanceof EntrypointError) || !o.wasm) throw e;
    const own = o.wasm.artifact();
    if (!own) throw e;
    const art = execArtifact(o.spec, o.process, own);
    if ("refused" in art) throw new EntrypointError(`${e.message} ${art.refused}`);
    module = art.module;
  }
  return { kind: "wasm", run: runPlan(o.bundle, withExec, module), spec: withExec };
}

/** Normal mode: the exec's process as runc runs it (a wasm module's becomes our executor's, with its plan written). */
export async function prepareExecProcess(o: ExecProcessOptions): Promise<{ process: SpecProcess; kind: "wasm" | "native" }> {
  const spec = await readSpec(o.bundle);
  // The container's executor, run directory and compiled module mounts are where its derived bundle put them.
  const derived = o.runtimeBundle === o.bundle ? undefined : await readSpec(o.runtimeBundle);
  const mountsOf = () => ourMounts(derived as Spec, o.runtimeBundle);
  const plan = await planExec({
    bundle: o.bundle,
    spec,
    engine: o.engine,
    process: o.process,
    ...(derived
      ? {
          wasm: {
            artifact: () => {
              const mounts = mountsOf();
              // The container's own plan says whether its module is an artifact's.
              if (!containerPlan(mounts).module.artifact) return undefined;
              return {
                host: posix.join(mounts.runDir, ARTIFACT_MODULE),
                hostRoot: mounts.runDir,
                path: `${mounts.runAt}/${ARTIFACT_MODULE}`,
              };
            },
          },
        }
      : {}),
  });
  if (plan.kind === "native") return { process: o.process, kind: "native" };
  const mounts = mountsOf();
  const { run } = plan;
  const name = `exec-${new Bun.CryptoHasher("sha256").update(JSON.stringify(run)).digest("hex").slice(0, 32)}.json`;
  writePlanFile(mounts.runDir, name, run, plan.spec);
  const process = executorProcess(o.process, {
    exec: o.executorDir ?? (await ensureExecutorDir({ engine: o.engine, stateRoot: o.executorStateRoot })),
    mountPoint: mounts.executor,
    planFile: `${mounts.runAt}/${name}`,
    viewAt: viewMountPoint(spec),
    ...((await sameCompile(o.engine, run.module, mounts)) ? { compiled: `${mounts.runAt}/${COMPILED_MODULE}` } : {}),
  });
  return { process, kind: "wasm" };
}

/** Where a wasm container's derived bundle mounts our directories. */
interface OurMounts {
  /** The executor mount, in the container. */
  executor: string;
  /** The run directory: on the host, and in the container. */
  runDir: string;
  runAt: string;
  /** The compile-cache key of the compiled module bound into the container, if one is. */
  compiledKey?: string;
}

function ourMounts(derived: Spec, runtimeBundle: string): OurMounts {
  const loader = derived.process.args[0] ?? "";
  if (!loader.endsWith(`/${LOADER_NAME}`)) throw new EntrypointError(`${runtimeBundle}: not a bundle of our executor`);
  const executor = dirname(loader);
  const runAt = runMount(executor);
  const runDir = (derived.mounts ?? []).find((m) => m.destination === runAt)?.source;
  if (!runDir) throw new EntrypointError(`${runtimeBundle}: the container has no run directory mounted at ${runAt}`);
  const compiled = (derived.mounts ?? []).find((m) => m.destination === `${runAt}/${COMPILED_MODULE}`)?.source;
  return { executor, runDir, runAt, ...(compiled?.endsWith(".cwasm") ? { compiledKey: basename(compiled, ".cwasm") } : {}) };
}

/**
 * Whether the exec's module is the one the container's compiled artifact was compiled from
 * (the same compile-cache key): the exec then maps it too instead of compiling. The container
 * has no other compile to offer: it sees no compile cache (docs/ARCHITECTURE.md, "Compiled code
 * we trust").
 */
async function sameCompile(engine: Engine, module: RunModule, mounts: OurMounts): Promise<boolean> {
  if (!mounts.compiledKey || !engine.compiler) return false;
  try {
    return (await engine.compiler.cacheKey(new Uint8Array(readFileSync(module.host)))) === mounts.compiledKey;
  } catch {
    return false; // unreadable here: the executor reports it
  }
}

/**
 * An exec into an artifact container whose args[0] is not a file of the container. The
 * artifact's module runs when args[0] names it as the container's own args[0] did (the same
 * string, the same path from each one's cwd, or its bare file name: the image's entrypoint,
 * or the pod's command), as the path the exec sees it at, or not at all ("#name": only an
 * export, as an artifact's args[0] may be in runwasi). Anything else is refused with what
 * would work: running the module for any name (runwasi's rule for an artifact's own process)
 * would turn a mistyped command, or a shell a user expected, into a second copy of the
 * workload. runwasi itself refuses every exec ("exec is not supported").
 */
function execArtifact(spec: Spec, process: SpecProcess, own: ArtifactOfContainer): { module: RunModule } | { refused: string } {
  const arg0 = process.args[0] ?? "";
  const initArg0 = spec.process.args[0] ?? "";
  const ownArg0 = splitEntry(initArg0).path;
  const path = splitEntry(arg0).path;
  const abs = (p: string, cwd: string) => posix.resolve(cwd || "/", p);
  const names =
    arg0.startsWith("#") ||
    path === own.path ||
    (!ownArg0.startsWith("#") &&
      path !== "" &&
      (path === ownArg0 ||
        abs(path, process.cwd) === abs(ownArg0, spec.process.cwd) ||
        (!path.includes("/") && path === basename(ownArg0))));
  if (!names) {
    const as = ownArg0.startsWith("#") ? "" : `${JSON.stringify(ownArg0)} (the container's args[0]) or `;
    return {
      refused: `(the container runs an OCI wasm artifact, whose module is the image's layer: exec it as ${as}"#<export>")`,
    };
  }
  const entry = artifactEntry(arg0);
  // The module is kept in the container's run directory for the container's life.
  if (!existsSync(own.host)) throw new EntrypointError(`the artifact's module ${own.host} is gone`);
  return { module: { host: own.host, hostRoot: own.hostRoot, path: own.path, ...(entry ? { entry } : {}), artifact: true } };
}

/** The container's own RunPlan, as the shim wrote it at its Create. */
function containerPlan(mounts: OurMounts): RunPlan {
  const file = posix.join(mounts.runDir, PLAN_FILE);
  try {
    return parseRunPlan(readFileSync(file, "utf8"));
  } catch (e) {
    throw new EntrypointError(`the container's plan ${file}: ${(e as Error).message}`);
  }
}
