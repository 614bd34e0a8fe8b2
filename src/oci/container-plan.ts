// From containerd's bundle to what runs: one function for both modes (docs/ARCHITECTURE.md,
// "One Create"). planContainer() finds the entrypoint (process.args[0]) inside the container's
// rootfs and asks the engine whether it runs it (Engine.canHandle):
//  - native (ELF or "#!" script, e.g. the pod's pause container): runc runs the bundle as is;
//  - the engine's (a wasm module, WAT text, ...): a RunPlan (src/engines/run-plan.ts), which
//    normal mode turns into a runc bundle around our executor (./bundle.ts) and shared mode
//    runs on a thread of the daemon (src/daemon/inproc-runtime.ts);
//  - not in the rootfs: perhaps an OCI wasm artifact, whose module is its image's layer
//    (./artifact.ts); its bytes are written to the container's run directory.
// Every rule of the plan (where a module is found, the export, env, limits, the WASI view, the
// user, the network) is here once; an exec's process gets the same rules (./exec-process.ts).
//
// The rootfs must already be mounted (src/oci/rootfs.ts) because we look inside it. File
// access is synchronous: a few small files and stats, microseconds each, where asynchronous
// fs calls would start Bun's thread pool (docs/ARCHITECTURE.md).

import { closeSync, fstatSync, mkdirSync, renameSync, statSync, writeFileSync } from "node:fs";
import { isAbsolute, join, posix, relative, resolve } from "node:path";
import type { Engine, Entrypoint } from "../engines/engine.ts";
import { MODULE_MAX_BYTES, openModuleFile, readHeadOf } from "../engines/module-file.ts";
import type { RunLimits, RunModule, RunPlan, RunUser } from "../engines/run-plan.ts";
import { resolveInRoot } from "./in-root.ts";
import { envValue, type Spec, type SpecMount } from "./spec.ts";
import { viewVolumes } from "./wasi-view.ts";

export type EntrypointKind = "wasm" | "native";

/** What runs a container: runc alone (native), or a wasm module as `run` says. */
export type ContainerPlan = { kind: "native"; spec: Spec } | { kind: "wasm"; spec: Spec; run: RunPlan };

/** Where an OCI wasm artifact's module comes from and goes. */
export interface ArtifactSource {
  /**
   * The container's image's wasm layer if the image is an OCI wasm artifact (./artifact.ts),
   * else undefined. Asked only when args[0] is not a file of the container.
   */
  find: () => Promise<{ bytes: Uint8Array } | undefined>;
  /** The host directory the module is written to (ARTIFACT_MODULE): the container's run directory. */
  dir: string;
  /** Where the container sees `dir`, when it is mounted there (normal mode); else the module is named by its host path. */
  seenAt?: () => Promise<string>;
}

export interface PlanInput {
  /** containerd's bundle directory (config.json, rootfs/). */
  bundle: string;
  /** Its config.json, parsed (./spec.ts). */
  spec: Spec;
  /** The engine that runs the modules. */
  engine: Engine;
  /** Absent: an entrypoint missing from the rootfs is an error, whatever the image. */
  artifact?: ArtifactSource;
}

export class EntrypointError extends Error {
  override name = "EntrypointError";
}

/**
 * The container's run directory, in its work dir: an artifact's module (both modes); in normal
 * mode also the plans the executor reads (./bundle.ts, ./exec-process.ts).
 */
export const RUN_DIR = "run";
/** An artifact's module, in the container's run directory. */
export const ARTIFACT_MODULE = "module.wasm";
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Decide what runs the container. Throws EntrypointError (and ArtifactError, SpecError) with
 * messages fit for the Create reply.
 */
export async function planContainer(i: PlanInput): Promise<ContainerPlan> {
  const { bundle, spec, engine } = i;
  let inspected: { kind: EntrypointKind; entrypoint: Entrypoint; root: string };
  try {
    inspected = await inspectEntrypoint(bundle, spec, engine);
  } catch (e) {
    // No such file: the image may be a wasm artifact, whose module is not in the rootfs.
    if (!(e instanceof EntrypointError) || !i.artifact) throw e;
    const module = await artifactModule(e, spec, engine, i.artifact);
    return { kind: "wasm", spec, run: runPlan(bundle, spec, module) };
  }
  if (inspected.kind === "native") return { kind: "native", spec };
  const ep = inspected.entrypoint;
  const module: RunModule = { host: ep.host, hostRoot: inspected.root, path: ep.path, ...(ep.entry ? { entry: ep.entry } : {}) };
  return { kind: "wasm", spec, run: runPlan(bundle, spec, module) };
}

/** The module of an artifact image, written to its run directory; `missing` stands when the image is none. */
async function artifactModule(missing: EntrypointError, spec: Spec, engine: Engine, a: ArtifactSource): Promise<RunModule> {
  let found: { bytes: Uint8Array } | undefined;
  try {
    found = await a.find();
  } catch (err) {
    // An artifact's own errors say what is wrong with it; anything else (containerd not
    // answering) leaves the first error standing, with the reason we could not look further.
    if (err instanceof Error && err.name === "ArtifactError") throw err;
    throw new EntrypointError(`${missing.message} (and containerd could not tell whether the image is a wasm artifact: ${String(err)})`);
  }
  if (!found) throw missing;
  const entry = artifactEntry(spec.process.args[0] ?? "");
  // Path and host are not known yet, and no engine needs them to sniff the bytes.
  const head = found.bytes.subarray(0, 4096);
  if (!engine.canHandle({ path: "", host: "", head, ...(entry ? { entry } : {}) }, spec))
    throw new EntrypointError(`the image's wasm layer is not a module ${engine.name} runs`);
  mkdirSync(a.dir, { recursive: true, mode: 0o755 });
  const host = join(a.dir, ARTIFACT_MODULE);
  // Readable by the container's user, whoever that is; written whole before anything reads it.
  const tmp = `${host}.${process.pid}`;
  writeFileSync(tmp, found.bytes, { mode: 0o644 });
  renameSync(tmp, host);
  const path = a.seenAt ? `${await a.seenAt()}/${ARTIFACT_MODULE}` : host;
  return { host, hostRoot: a.dir, path, ...(entry ? { entry } : {}), artifact: true };
}

/**
 * The plan for running `module` as the spec's process: everything but the module comes from
 * the spec, one rule each. An exec's plan is this with the exec's process in the spec.
 */
export function runPlan(bundle: string, spec: Spec, module: RunModule): RunPlan {
  const p = spec.process;
  const net = spec.linux?.namespaces?.find((n) => n.type === "network");
  return {
    module,
    args: p.args,
    env: lastWins(p.env ?? []),
    cwd: p.cwd || "/",
    limits: limitsOf(spec),
    view: { root: rootfsOf(bundle, spec), readOnly: spec.root.readonly === true, volumes: viewVolumes(spec) },
    user: userOf(spec),
    ...(net?.path ? { netns: net.path } : net ? { unnamedNetns: true as const } : {}),
  };
}

/**
 * The environment as the container's process would see it: runc keeps only the last entry of
 * a repeated key (libcontainer's prepareEnv), and CRI repeats a key the image and the pod
 * both set (image env first). Order: where each key's last entry is.
 */
export function lastWins(env: string[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (let i = env.length - 1; i >= 0; i--) {
    const e = env[i] as string;
    const eq = e.indexOf("=");
    const key = eq < 0 ? e : e.slice(0, eq);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(e);
  }
  return out.reverse();
}

/** The spec's limits. -1 and 0 mean "unlimited" for memory in the spec. */
function limitsOf(spec: Spec): RunLimits {
  const r = spec.linux?.resources;
  const out: RunLimits = {};
  const memory = r?.memory?.limit;
  if (typeof memory === "number" && memory > 0) out.memoryBytes = memory;
  const cpu: NonNullable<RunLimits["cpu"]> = {};
  for (const k of ["quota", "period", "shares"] as const) {
    const v = r?.cpu?.[k];
    if (typeof v === "number" && Number.isFinite(v)) cpu[k] = v;
  }
  if (Object.keys(cpu).length) out.cpu = cpu;
  const cpuset: NonNullable<RunLimits["cpuset"]> = {};
  for (const k of ["cpus", "mems"] as const) {
    const v = r?.cpu?.[k];
    if (typeof v === "string" && v !== "") cpuset[k] = v;
  }
  if (Object.keys(cpuset).length) out.cpuset = cpuset;
  const nofile = spec.process.rlimits?.find((l) => l.type === "RLIMIT_NOFILE");
  if (typeof nofile?.soft === "number") out.openFiles = nofile.soft;
  return out;
}

function userOf(spec: Spec): RunUser {
  const u = spec.process.user;
  return { uid: u?.uid ?? 0, gid: u?.gid ?? 0, additionalGids: [...(u?.additionalGids ?? [])] };
}

/** Split "module.wasm#func" (a "#" in the last path component only). */
export function splitEntry(arg0: string): { path: string; entry?: string } {
  const slash = arg0.lastIndexOf("/");
  const hash = arg0.indexOf("#", slash + 1);
  if (hash <= slash + 1 || hash === arg0.length - 1) return { path: arg0 };
  return { path: arg0.slice(0, hash), entry: arg0.slice(hash + 1) };
}

/**
 * The export an artifact container's args[0] names. The module is the image's layer, so
 * args[0] needs no path: "#name" alone names an export, as in runwasi (whose args[0] for
 * an artifact only ever names the export); "anything.wasm#name" does too.
 */
export function artifactEntry(arg0: string): string | undefined {
  if (arg0.startsWith("#")) return arg0.length > 1 ? arg0.slice(1) : undefined;
  return splitEntry(arg0).entry;
}

/**
 * Find args[0] in the container: a name with "/" is taken relative to cwd (absolute as is);
 * a bare name is looked up in each PATH entry (the spec's env, else the default PATH) and then
 * in cwd (what runwasi does for wasm entrypoints like "app.wasm"). Symlinks resolve inside the
 * rootfs, or inside the volume the path is under: `root` is that directory on the host, and
 * `host` is under it.
 */
export function findEntrypoint(
  rootfs: string,
  arg0: string,
  env: string[] | undefined,
  cwd: string,
  mounts: SpecMount[] = [],
): { host: string; path: string; root: string } | undefined {
  const candidates: string[] = [];
  if (arg0.includes("/")) candidates.push(posix.resolve(cwd || "/", arg0));
  else {
    const path = envValue(env, "PATH") ?? DEFAULT_PATH;
    for (const dir of path.split(":")) {
      if (!dir) continue;
      candidates.push(posix.resolve(cwd || "/", dir, arg0));
    }
    candidates.push(posix.resolve(cwd || "/", arg0));
  }
  for (const c of candidates) {
    const inRootfs = (): { host: string; path: string; root: string } | undefined => {
      const r = resolveInRoot(rootfs, c);
      return r && { ...r, root: rootfs };
    };
    const r = resolveThroughMounts(c, mounts) ?? inRootfs();
    if (!r) continue;
    try {
      if (statSync(r.host).isFile()) return r;
    } catch {}
  }
  return undefined;
}

/**
 * A path under a bind mount of the spec (a volume: emptyDir, hostPath, ConfigMap) is
 * found in the mount's source, as the container will see it. The deepest mount wins;
 * symlinks resolve inside that source.
 */
function resolveThroughMounts(path: string, mounts: SpecMount[]): { host: string; path: string; root: string } | undefined {
  let best: SpecMount | undefined;
  for (const m of mounts) {
    const bind = m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
    if (!bind || !m.source || !m.destination) continue;
    const dest = posix.normalize(m.destination).replace(/\/+$/, "") || "/";
    if (dest === "/" || !(path === dest || path.startsWith(`${dest}/`))) continue;
    if (!best || dest.length > posix.normalize(best.destination).length) best = m;
  }
  if (!best) return undefined;
  const dest = posix.normalize(best.destination).replace(/\/+$/, "");
  const inner = resolveInRoot(best.source as string, path.slice(dest.length) || "/");
  return inner ? { host: inner.host, path, root: best.source as string } : undefined;
}

/** A native program: an ELF binary or a "#!" script, with an execute bit. */
export function isNativeExecutable(head: Uint8Array, executable: boolean): boolean {
  const elf = head.length >= 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
  const script = head.length >= 2 && head[0] === 0x23 && head[1] === 0x21;
  return (elf || script) && executable;
}

/**
 * Find the spec's entrypoint and decide who runs it: `engine` (wasm) or runc itself (native).
 * The file is opened inside `root` (the rootfs, or the volume it is in) without following links
 * out of it, and only if it is a regular file (../engines/module-file.ts); a module must also be
 * within the module size cap (a native program's size is runc's business).
 */
export async function inspectEntrypoint(
  bundle: string,
  spec: Spec,
  engine: Engine,
): Promise<{ kind: EntrypointKind; entrypoint: Entrypoint; root: string }> {
  const rootfs = rootfsOf(bundle, spec);
  const arg0 = spec.process.args[0] as string;
  const { path, entry } = splitEntry(arg0);
  const found = findEntrypoint(rootfs, path, spec.process.env, spec.process.cwd, spec.mounts);
  if (!found) throw new EntrypointError(`${arg0}: no such file in the container's rootfs`);
  let opened: { fd: number; size: number };
  try {
    opened = openModuleFile(found.root, relative(found.root, found.host), found.path, Number.POSITIVE_INFINITY);
  } catch (e) {
    throw new EntrypointError((e as Error).message);
  }
  let head: Uint8Array;
  let executable: boolean;
  try {
    head = readHeadOf(opened.fd);
    executable = (fstatSync(opened.fd).mode & 0o111) !== 0;
  } finally {
    closeSync(opened.fd);
  }
  const ep: Entrypoint = { path: found.path, host: found.host, head, ...(entry ? { entry } : {}) };
  if (engine.canHandle(ep, spec)) {
    if (opened.size > MODULE_MAX_BYTES)
      throw new EntrypointError(`${found.path}: ${opened.size} bytes, more than a module may have (${MODULE_MAX_BYTES})`);
    return { kind: "wasm", entrypoint: ep, root: found.root };
  }
  if (!isNativeExecutable(ep.head, executable)) {
    // Worded for users, who know wasm modules rather than engines.
    throw new EntrypointError(`${found.path}: not a wasm module and not executable`);
  }
  if (entry) throw new EntrypointError(`${arg0}: "#${entry}" names a wasm export, but ${found.path} is a native executable`);
  return { kind: "native", entrypoint: ep, root: found.root };
}

/** Absolute host path of the container's rootfs. */
export function rootfsOf(bundle: string, spec: Spec): string {
  return isAbsolute(spec.root.path) ? spec.root.path : resolve(bundle, spec.root.path);
}
