// What one wasm process runs (a container's, or an exec's), decided once by the shim from the
// container's OCI spec (src/oci/container-plan.ts) and run as is by both modes:
//  - normal mode: the shim writes it as JSON into the container's run directory, which the
//    derived bundle mounts read-only; the executor reads it (`executor --plan FILE`, ./executor.ts).
//    The executor's own process gets nothing of the container's environment, so an image's
//    LD_PRELOAD, BUN_OPTIONS or BUNWASI_* are the module's env and nothing more.
//  - shared mode: the daemon runs it on a thread (src/daemon/inproc-runtime.ts).
//
// It lives here, beside the engine boundary, because the executor (this floor) reads it; the
// rules that make it from a spec are the OCI layer's, above.

import type { RunContext } from "./engine.ts";

/** The module to run. */
export interface RunModule {
  /**
   * The file on the host: found inside the container's rootfs (or a volume's source) without
   * leaving it, or an OCI wasm artifact's layer written to the container's run directory.
   */
  host: string;
  /**
   * The host directory `host` was found inside (the rootfs, the source of the volume it is in,
   * the run directory): the host opens it again inside that directory, never through a link
   * out of it (./module-file.ts). Absent from plans written before it was: `host`'s directory.
   */
  hostRoot?: string;
  /**
   * The same file as the container sees it (what the executor opens inside the container). For
   * an artifact in shared mode, where nothing is mounted into a container, its host path.
   */
  path: string;
  /** The export to call ("module.wasm#name", or "#name" alone for an artifact); absent: `_start`. */
  entry?: string;
  /** The module is an OCI wasm artifact's layer, not a file of the container. */
  artifact?: true;
}

/** Limits the spec sets, read once here. Only memory is enforced by the run itself today. */
export interface RunLimits {
  /** linux.resources.memory.limit when positive: the bound of the store's linear memory. */
  memoryBytes?: number;
  /** linux.resources.cpu, as given (quota and period in µs, shares a weight). */
  cpu?: { quota?: number; period?: number; shares?: number };
  /**
   * linux.resources.cpu.cpus and .mems, as given (cpuset lists): runc's cgroup holds normal
   * mode's executor to them; the shared-mode daemon confines the run's thread
   * (src/linux/cpuset.ts).
   */
  cpuset?: { cpus?: string; mems?: string };
  /** The soft RLIMIT_NOFILE of process.rlimits: how many files the process may hold open. */
  openFiles?: number;
}

/** A bind-mounted directory of the spec (a volume) as the module sees it. */
export interface ViewVolume {
  /** The directory on the host. */
  source: string;
  /** Where the module sees it (absolute, normalized, never "/" and never under /proc, /sys, /dev). */
  destination: string;
  readOnly: boolean;
}

/**
 * The filesystem a module sees (its WASI "/"): the container's rootfs and its bind-mounted
 * directories, without the kernel's views (/proc, /sys, /dev, any other kernel filesystem)
 * and without device nodes. Each mode builds it by mounts (src/oci/wasi-view.ts): normal mode
 * in the container through runc, shared mode under the container's work dir in the daemon.
 */
export interface WasiView {
  /** The container's rootfs on the host. */
  root: string;
  /** spec.root.readonly. */
  readOnly: boolean;
  /** In the spec's order. */
  volumes: ViewVolume[];
}

/** process.user: who the module's file access should run as. */
export interface RunUser {
  uid: number;
  gid: number;
  additionalGids: number[];
}

export interface RunPlan {
  module: RunModule;
  /** argv as the module sees it: the spec's process.args as given (args[0] with its "#name" too). */
  args: string[];
  /** KEY=VALUE, one per key: the last entry of a repeated key, where it stands (runc's rule). */
  env: string[];
  /** process.cwd. */
  cwd: string;
  limits: RunLimits;
  view: WasiView;
  user: RunUser;
  /**
   * The network namespace the spec names by path (CRI puts the pod's there); absent when it
   * names none (the host's network, or a new namespace without a path).
   */
  netns?: string;
  /**
   * The spec asks for a network namespace of its own without naming one (`ctr run` without
   * --net-host; runc would make an empty one). A run that cannot be given one (in the
   * shared-mode daemon) gets no outgoing network instead.
   */
  unnamedNetns?: true;
}

/** The file name of a container's plan in its run directory. */
export const PLAN_FILE = "plan.json";

export class RunPlanError extends Error {
  override name = "RunPlanError";
}

/** Parse a plan as the shim wrote it; throws RunPlanError naming the field that is wrong. */
export function parseRunPlan(text: string): RunPlan {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new RunPlanError(`plan: not JSON (${(e as Error).message})`);
  }
  const bad = (what: string): never => {
    throw new RunPlanError(`plan: ${what}`);
  };
  if (!isObject(raw)) return bad("not an object");
  const m = raw.module;
  if (!isObject(m) || typeof m.host !== "string" || typeof m.path !== "string" || !m.path) bad("module needs host and path");
  if ((m as Record<string, unknown>).entry !== undefined && typeof (m as Record<string, unknown>).entry !== "string")
    bad("module.entry is not a string");
  if (!isStrings(raw.args) || raw.args.length === 0) bad("args must be a non-empty list of strings");
  if (!isStrings(raw.env)) bad("env must be a list of strings");
  if (typeof raw.cwd !== "string") bad("cwd is not a string");
  const limits = raw.limits;
  if (!isObject(limits)) return bad("limits is missing");
  const mem = limits.memoryBytes;
  if (mem !== undefined && (typeof mem !== "number" || !Number.isSafeInteger(mem) || mem <= 0))
    bad("limits.memoryBytes wants a byte count");
  const view = raw.view;
  if (!isObject(view) || typeof view.root !== "string" || typeof view.readOnly !== "boolean" || !Array.isArray(view.volumes))
    bad("view needs root, readOnly and volumes");
  const user = raw.user;
  if (!isObject(user) || typeof user.uid !== "number" || typeof user.gid !== "number") bad("user needs uid and gid");
  return raw as unknown as RunPlan;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isStrings(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === "string");
}

/**
 * The parts of a run a plan decides, as a RunContext; the caller says where it sees the module
 * and the view (the executor: inside the container; the daemon: on the host).
 */
export function runContextOf(
  plan: RunPlan,
  at: { modulePath: string; rootDir: string },
): Pick<RunContext, "modulePath" | "entry" | "args" | "env" | "cwd" | "rootDir" | "memoryLimitBytes" | "maxOpenFiles"> {
  return {
    modulePath: at.modulePath,
    ...(plan.module.entry ? { entry: plan.module.entry } : {}),
    args: plan.args,
    env: plan.env,
    cwd: plan.cwd,
    rootDir: at.rootDir,
    ...(plan.limits.memoryBytes !== undefined ? { memoryLimitBytes: plan.limits.memoryBytes } : {}),
    ...(plan.limits.openFiles !== undefined ? { maxOpenFiles: plan.limits.openFiles } : {}),
  };
}
