// From containerd's bundle to the bundle we hand the OCI runtime (docs/ARCHITECTURE.md, "One Create").
//
// prepare() reads containerd's config.json, finds the entrypoint (process.args[0]) inside the
// container's rootfs and asks the shim's engine whether it runs it (Engine.canHandle):
//  - the engine's (a wasm module, WAT text, ...): we write a derived bundle under <stateDir>/<id>
//    whose config.json is containerd's with the process replaced by our executor, started through
//    the loader from a read-only bind mount of the executor directory (src/oci/executor-dir.ts).
//    Everything else (env, cwd, user, namespaces, cgroupsPath, resources, seccomp, rlimits,
//    capabilities, mounts, hooks) is kept, so the module gets the same sandbox a native
//    process would.
//  - native (ELF or "#!" script, e.g. the pod's pause container): runc runs containerd's bundle
//    unchanged.
//
// The rootfs must already be mounted (src/oci/rootfs.ts) because we look inside it. File
// access here is synchronous: a few small files and stats, microseconds each, where
// asynchronous fs calls would start Bun's thread pool, whose threads then stay for the
// server's whole life (memory per idle pod, issue 8).

import {
  accessSync,
  closeSync,
  constants,
  lstatSync,
  mkdirSync,
  openSync,
  readlinkSync,
  readSync,
  renameSync,
  type Stats,
  statSync,
  writeFileSync,
} from "node:fs";
import { isAbsolute, join, posix, resolve } from "node:path";
import { withSmallVmEntries } from "../common/vm-env.ts";
import type { Engine, Entrypoint } from "../engines/engine.ts";
import { EXECUTOR_MOUNT, type ExecutorDir, ensureExecutorDir, LOADER_NAME } from "./executor-dir.ts";
import { envValue, readSpec, type Spec, SpecError, type SpecMount } from "./spec.ts";
import { viewMountPoint, viewMounts } from "./wasi-view.ts";

export type EntrypointKind = "wasm" | "native";

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
   * Host compile-cache directory to mount at /.bunwasi-cache. Read-only by default: the trusted
   * shim fills it (src/oci/precompile.ts); `cacheWritable` lets the executor write too,
   * which is only safe for trusted modules (the module sees "/" and could plant native code).
   */
  cacheDir?: string;
  cacheWritable?: boolean;
  /** Extra executor flags (e.g. ["--stats"]). */
  executorFlags?: string[];
  /**
   * Asked only when args[0] is not in the rootfs: the wasm layer of the container's image if
   * it is an OCI wasm artifact (src/oci/artifact.ts), else undefined. Its bytes become the
   * module, mounted read-only at <executor mount>-artifact/module.wasm.
   */
  artifact?: () => Promise<{ bytes: Uint8Array } | undefined>;
}

export interface Prepared {
  /** The bundle to give the OCI runtime (`runc create --bundle …`). */
  runtimeBundle: string;
  kind: EntrypointKind;
  /** Wasm: the module's path inside the container. */
  module?: string;
  /** Wasm: the module's path on the host (under the rootfs or a volume's source), found once here. */
  moduleHost?: string;
  /** Wasm: export to call ("module.wasm#func"); absent = _start. */
  entry?: string;
  /** The parsed containerd spec. */
  spec: Spec;
}

export class EntrypointError extends Error {
  override name = "EntrypointError";
}

export const CACHE_MOUNT = "/.bunwasi-cache";
/** An artifact's module, in a directory mounted beside the executor's (same rules for a read-only rootfs). */
export const ARTIFACT_MODULE = "module.wasm";
const artifactMount = (executorMount: string) => `${executorMount}-artifact`;
/** Where a container whose executor is mounted at `executorMount` sees its artifact's module. */
export const artifactModulePath = (executorMount: string) => `${artifactMount(executorMount)}/${ARTIFACT_MODULE}`;
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
 * Resolve `containerPath` (absolute, inside the container) to a host path under `rootfs`,
 * following symlinks the way the kernel would with `rootfs` as "/": an absolute link target
 * restarts at the rootfs, ".." never climbs above it. Returns the container path it resolved
 * to, or undefined if some component does not exist.
 */
export async function resolveInRootfs(rootfs: string, containerPath: string): Promise<{ host: string; path: string } | undefined> {
  const todo = containerPath.split("/").filter(Boolean);
  const done: string[] = [];
  let links = 0;
  while (todo.length) {
    const part = todo.shift() as string;
    if (part === ".") continue;
    if (part === "..") {
      done.pop(); // at "/" this is a no-op: no escape
      continue;
    }
    const host = join(rootfs, ...done, part);
    let st: Stats;
    try {
      st = lstatSync(host);
    } catch {
      return undefined;
    }
    if (st.isSymbolicLink()) {
      if (++links > 40) return undefined; // ELOOP
      const target = readlinkSync(host);
      if (target.startsWith("/")) done.length = 0;
      todo.unshift(...target.split("/").filter(Boolean));
      continue;
    }
    if (todo.length && !st.isDirectory()) return undefined;
    done.push(part);
  }
  return { host: join(rootfs, ...done), path: `/${done.join("/")}` };
}

/**
 * Find args[0] in the container: a name with "/" is taken relative to cwd (absolute as is);
 * a bare name is looked up in each PATH entry (the spec's env, else the default PATH) and then
 * in cwd (what runwasi does for wasm entrypoints like "app.wasm").
 */
export async function findEntrypoint(
  rootfs: string,
  arg0: string,
  env: string[] | undefined,
  cwd: string,
  mounts: SpecMount[] = [],
): Promise<{ host: string; path: string } | undefined> {
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
    const r = (await resolveThroughMounts(c, mounts)) ?? (await resolveInRootfs(rootfs, c));
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
async function resolveThroughMounts(path: string, mounts: SpecMount[]): Promise<{ host: string; path: string } | undefined> {
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
  const inner = await resolveInRootfs(best.source as string, path.slice(dest.length) || "/");
  return inner ? { host: inner.host, path } : undefined;
}

/** A native program: an ELF binary or a "#!" script, with an execute bit. */
export function isNativeExecutable(head: Uint8Array, executable: boolean): boolean {
  const elf = head.length >= 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
  const script = head.length >= 2 && head[0] === 0x23 && head[1] === 0x21;
  return (elf || script) && executable;
}

/** The first `n` bytes of `file`; non-blocking, so a fifo swapped in after the stat reads nothing instead of waiting. */
export function readHead(file: string, n = 4096): Uint8Array {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const b = new Uint8Array(n);
    const bytesRead = readSync(fd, b, 0, n, 0);
    return b.subarray(0, bytesRead);
  } finally {
    closeSync(fd);
  }
}

/** Find containerd's entrypoint and decide who runs it: `engine` (wasm) or runc itself (native). */
export async function inspectEntrypoint(
  bundle: string,
  spec: Spec,
  engine: Engine,
): Promise<{ kind: EntrypointKind; entrypoint: Entrypoint }> {
  const rootfs = rootfsOf(bundle, spec);
  const arg0 = spec.process.args[0] as string;
  const { path, entry } = splitEntry(arg0);
  const found = await findEntrypoint(rootfs, path, spec.process.env, spec.process.cwd, spec.mounts);
  if (!found) throw new EntrypointError(`${arg0}: no such file in the container's rootfs`);
  const st = statSync(found.host);
  const ep: Entrypoint = { path: found.path, host: found.host, head: readHead(found.host), ...(entry ? { entry } : {}) };
  if (engine.canHandle(ep, spec)) return { kind: "wasm", entrypoint: ep };
  if (!isNativeExecutable(ep.head, (st.mode & 0o111) !== 0)) {
    // Worded for users, who know wasm modules rather than engines.
    throw new EntrypointError(`${found.path}: not a wasm module and not executable`);
  }
  if (entry) throw new EntrypointError(`${arg0}: "#${entry}" names a wasm export, but ${found.path} is a native executable`);
  return { kind: "native", entrypoint: ep };
}

/** Absolute host path of the container's rootfs. */
export function rootfsOf(bundle: string, spec: Spec): string {
  return isAbsolute(spec.root.path) ? spec.root.path : resolve(bundle, spec.root.path);
}

/** Is the directory on a read-only mount (or otherwise not writable by us)? */
async function readOnlyDir(dir: string): Promise<boolean> {
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
export async function executorMountPoint(rootfs: string, spec: Spec): Promise<string> {
  if ((await exists(join(rootfs, EXECUTOR_MOUNT))) || !(await readOnlyDir(rootfs))) return EXECUTOR_MOUNT;
  const devTmpfs = (spec.mounts ?? []).some((m) => m.destination === "/dev" && m.type === "tmpfs");
  if (devTmpfs) return `/dev${EXECUTOR_MOUNT}`;
  throw new EntrypointError(`rootfs ${rootfs} is read-only, has no ${EXECUTOR_MOUNT} and no /dev tmpfs to mount the executor on`);
}

async function exists(p: string): Promise<boolean> {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Build the derived spec for a wasm entrypoint (pure: exported for tests). */
export function wasmSpec(
  spec: Spec,
  opts: {
    rootfs: string;
    module: string;
    entry?: string;
    exec: ExecutorDir;
    mountPoint: string;
    cacheDir?: string;
    cacheWritable?: boolean;
    executorFlags?: string[];
    /** Host directory holding an artifact's ARTIFACT_MODULE, mounted read-only. */
    artifactDir?: string;
  },
): Spec {
  const d = opts.mountPoint;
  const out: Spec = structuredClone(spec);
  out.root = { ...spec.root, path: opts.rootfs };
  const flags = ["--module", opts.module];
  if (opts.entry) flags.push("--entry", opts.entry);
  // The engine finds its files (executor().files) in the mounted directory.
  flags.push("--engine-dir", d);
  for (const [k, v] of Object.entries(opts.exec.engineOptions)) flags.push("--engine-opt", `${k}=${v}`);
  const limit = spec.linux?.resources?.memory?.limit;
  // cgroup memory limit also bounds the executor itself; the store limit gives the module a clean
  // memory.grow failure instead of an OOM kill. -1 / 0 mean unlimited in the spec.
  if (typeof limit === "number" && limit > 0) flags.push("--memory-limit", String(limit));
  if (opts.cacheDir) flags.push("--cache", CACHE_MOUNT);
  // The module's "/": the container without /proc, /sys and /dev (src/oci/wasi-view.ts).
  const view = viewMountPoint(spec);
  flags.push("--root-dir", view);
  flags.push(...(opts.executorFlags ?? []));
  out.process = {
    ...spec.process,
    // JSC options for the executor's VM (the executor hides them from the module).
    env: withSmallVmEntries(spec.process.env ?? []),
    args: [
      `${d}/${LOADER_NAME}`,
      "--library-path",
      d,
      `${d}/${opts.exec.binaryName}`,
      ...opts.exec.subcommand,
      ...flags,
      "--",
      ...spec.process.args,
    ],
  };
  const mounts = [...(spec.mounts ?? [])];
  mounts.push({ destination: d, type: "bind", source: opts.exec.dir, options: ["rbind", "ro", "nosuid", "nodev"] });
  if (opts.cacheDir) {
    // Not noexec: the engine maps an artifact from here as code (wasmtime's
    // deserialize_file), so containers of one module share its pages. noexec guarded
    // nothing: a wasm module cannot execve, and the artifact is native code we load anyway.
    mounts.push({
      destination: CACHE_MOUNT,
      type: "bind",
      source: opts.cacheDir,
      options: ["rbind", opts.cacheWritable ? "rw" : "ro", "nosuid", "nodev"],
    });
  }
  if (opts.artifactDir)
    mounts.push({ destination: artifactMount(d), type: "bind", source: opts.artifactDir, options: ["rbind", "ro", "nosuid", "nodev"] });
  mounts.push(...viewMounts(spec, opts.rootfs, view));
  out.mounts = mounts;
  return out;
}

/**
 * Decide how to run the container and produce the bundle for the OCI runtime.
 * Native: containerd's bundle as is. Wasm: <stateDir>/<id>/config.json (written atomically).
 * Throws SpecError / EntrypointError with messages fit for the Create reply.
 */
export async function prepare(opts: PrepareOptions): Promise<Prepared> {
  const spec = await readSpec(opts.bundle);
  let inspected: Awaited<ReturnType<typeof inspectEntrypoint>>;
  let artifact: Uint8Array | undefined;
  try {
    inspected = await inspectEntrypoint(opts.bundle, spec, opts.engine);
  } catch (e) {
    // No such file: the image may be a wasm artifact, whose module is not in the rootfs.
    if (!(e instanceof EntrypointError) || !opts.artifact) throw e;
    let found: { bytes: Uint8Array } | undefined;
    try {
      found = await opts.artifact();
    } catch (err) {
      // An artifact's own errors say what is wrong with it; anything else (containerd not
      // answering) leaves the first error standing, with the reason we could not look further.
      if (err instanceof Error && err.name === "ArtifactError") throw err;
      throw new EntrypointError(`${e.message} (and containerd could not tell whether the image is a wasm artifact: ${String(err)})`);
    }
    if (!found) throw e;
    artifact = found.bytes;
    const entry = artifactEntry(spec.process.args[0] ?? "");
    const head = artifact.subarray(0, 4096);
    // Path and host are set below, once the mount point is known.
    inspected = { kind: "wasm", entrypoint: { path: "", host: "", head, ...(entry ? { entry } : {}) } };
    if (!opts.engine.canHandle(inspected.entrypoint, spec))
      throw new EntrypointError(`the image's wasm layer is not a module ${opts.engine.name} runs`);
  }
  const { kind, entrypoint: ep } = inspected;
  if (kind === "native") return { runtimeBundle: opts.bundle, kind: "native", spec };

  const rootfs = rootfsOf(opts.bundle, spec);
  const exec = opts.executorDir ?? (await ensureExecutorDir({ engine: opts.engine, stateRoot: opts.executorStateRoot }));
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(opts.id))
    throw new SpecError(`container id ${JSON.stringify(opts.id)} is not a valid directory name`);
  const dir = join(opts.stateDir, opts.id);
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  const mountPoint = await executorMountPoint(rootfs, spec);
  let artifactDir: string | undefined;
  if (artifact) {
    artifactDir = join(dir, "artifact");
    mkdirSync(artifactDir, { recursive: true, mode: 0o755 });
    ep.host = join(artifactDir, ARTIFACT_MODULE);
    ep.path = artifactModulePath(mountPoint);
    // Readable by the container's user, whoever that is; written whole before runc sees it.
    const tmp = `${ep.host}.${process.pid}`;
    writeFileSync(tmp, artifact, { mode: 0o644 });
    renameSync(tmp, ep.host);
  }
  const derived = wasmSpec(spec, {
    rootfs,
    module: ep.path,
    entry: ep.entry,
    exec,
    mountPoint,
    cacheDir: opts.cacheDir,
    cacheWritable: opts.cacheWritable,
    executorFlags: opts.executorFlags,
    artifactDir,
  });
  // The cache is bind-mounted, so it must exist now: an operator (or a cache reset) may have
  // removed it since the shim last wrote to it, and runc would fail the create on a missing source.
  if (opts.cacheDir) mkdirSync(opts.cacheDir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.config.json.${process.pid}`);
  writeFileSync(tmp, JSON.stringify(derived, null, 2), { mode: 0o600 });
  renameSync(tmp, join(dir, "config.json"));
  return {
    runtimeBundle: dir,
    kind: "wasm",
    module: ep.path,
    moduleHost: ep.host,
    ...(ep.entry ? { entry: ep.entry } : {}),
    spec,
  };
}
