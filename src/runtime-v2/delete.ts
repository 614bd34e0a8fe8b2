// `shim delete`: containerd runs it when a shim is gone (crashed, or lost over a
// restart) to clean up what the shim would have. Its stdout must be exactly a
// DeleteResponse; containerd logs its stderr, so every cleanup step that fails is said
// there (the response has no field for it, and failing would leave containerd's record).
//
// containerd (1.6, 1.7 and 2.x) runs it whenever a shim's connection closes, so after every
// server's exit, clean or not, and waits for it before `ctr run --rm` returns: most of the
// time the server has already removed everything. Then it only looks (a few stat calls) and
// answers, loading neither the runtime, the mount code (bun:ffi) nor the generated messages.
// After a crash of shared mode's daemon it runs for every container at once, each given 5 s
// by containerd: what it costs is docs/ARCHITECTURE.md's "What a crash costs".

import { existsSync, readdirSync, readFileSync, renameSync, rmdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { SIGNALS, signaledStatus } from "../common/signals.ts";
import type { ShimFlags } from "./flags.ts";
import { containerStateDir, removingDir, runtimeRoot, shimPaths } from "./paths.ts";

export async function deleteTask(flags: ShimFlags, warn: (m: string) => void = (m) => process.stderr.write(`${m}\n`)): Promise<Uint8Array> {
  await cleanUpLeftovers(
    { namespace: flags.namespace, id: flags.id, bundle: flags.bundle || process.cwd() },
    shimPaths(process.env).stateRoot,
    warn,
  );
  return killedResponse();
}

/** A container as `shim delete` names it. */
export interface LeftContainer {
  namespace: string;
  id: string;
  bundle: string;
}

/**
 * Whatever a server that died left of container `c` under `stateRoot`: its runtime's
 * container, its rootfs and view mounts, its work dir. Idempotent, every failure said through
 * `warn`; what is already gone costs a few stat calls. Also what a restarted shared-mode
 * daemon runs for each container of a dead one (src/daemon/sweep.ts).
 */
export async function cleanUpLeftovers(c: LeftContainer, stateRoot: string, warn: (m: string) => void): Promise<void> {
  const workDir = join(containerStateDir(c.namespace, stateRoot), c.id);
  const defaultRoot = runtimeRoot(c.namespace, stateRoot);
  // The work directory holds the runtime options of a container created with other ones (its
  // runtime's root among them): without it, the default runtime is the only one to ask.
  if (existsSync(workDir) || existsSync(join(defaultRoot, c.id))) await cleanUp(c, workDir, defaultRoot, warn);
  else if (rootfsMounted(c.bundle)) {
    // Only a rootfs mount may be left (the common case: nothing is, and rootfsMounted says so
    // from the directory alone, without the mount table or the mount code).
    const { unmountRootfs } = await import("../oci/rootfs.ts");
    try {
      unmountRootfs(c.bundle);
    } catch (e) {
      warn(`unmount rootfs: ${String(e)}`);
    }
  }
  // A server removes its namespace's folders when it exits with them empty; a dead one did not.
  for (const dir of [dirname(workDir), defaultRoot]) removeIfEmpty(dir, warn);
}

/** What a dead server left: the runtime's container, the rootfs mounts, the work directory. */
async function cleanUp(c: LeftContainer, workDir: string, defaultRoot: string, warn: (m: string) => void): Promise<void> {
  const [{ rmSync }, { findRuntime }, { unmountRootfs }, { unmountView, viewDir }, { loadRuntimeOptions }, { runtimeFor }] =
    await Promise.all([
      import("node:fs"),
      import("../linux/runc.ts"),
      import("../oci/rootfs.ts"),
      import("../oci/wasi-view.ts"),
      import("../task/runtime-options.ts"),
      import("./runtime.ts"),
    ]);
  // The runtime that created the container: a Create's runtime options (another binary or
  // root) are kept in its work directory for this moment (src/task/runtime-options.ts).
  const options = await loadRuntimeOptions(workDir).catch((e) => {
    warn(`runtime options: ${e instanceof Error ? e.message : String(e)}; using the default runtime`);
    return null;
  });
  const runtime = runtimeFor(c.namespace, { binary: findRuntime(process.env.BUNWASI_RUNTIME), root: defaultRoot }, options);
  // When the server already removed the container, there is nothing to ask the runtime.
  if (existsSync(join(runtime.root, c.id))) {
    await runtime.delete(c.id, true).catch((e) => warn(`runtime delete: ${String(e)}`));
  }
  try {
    unmountRootfs(c.bundle);
  } catch (e) {
    warn(`unmount rootfs: ${String(e)}`);
  }
  // Shared mode: a wasm container's WASI view, mounted by the daemon in its work dir. Still
  // mounted, the work dir is not removed: a recursive removal would reach into the rootfs and
  // the volumes through it.
  try {
    unmountView(viewDir(workDir));
  } catch (e) {
    warn(`unmount the module's view: ${String(e)}; ${workDir} is kept`);
    return;
  }
  // Renamed aside in one step, then removed: a clean-up killed half-way (containerd's 5 s)
  // leaves either the work dir whole, its owner's mark in it, or a dir aside that nothing uses
  // and whose remover's pid is in its name (src/daemon/sweep.ts removes both).
  const aside = removingDir(workDir, process.pid);
  try {
    renameSync(workDir, aside);
  } catch (e) {
    // Gone: removed meanwhile by another clean-up of the same container.
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") warn(`remove ${workDir}: ${String(e)}`);
    return;
  }
  try {
    rmSync(aside, { recursive: true, force: true });
  } catch (e) {
    warn(`remove ${aside}: ${String(e)}`);
  }
}

/**
 * What runc's shim reports for a task whose process it never saw exit: killed, now.
 */
export function killedResponse(now: number = Date.now()): Uint8Array {
  return deleteResponse({
    pid: 0,
    exitStatus: signaledStatus(SIGNALS.SIGKILL),
    exitedAt: { seconds: Math.floor(now / 1000), nanos: (now % 1000) * 1e6 },
  });
}

/**
 * containerd.task.v2.DeleteResponse {uint32 pid = 1; uint32 exit_status = 2;
 * google.protobuf.Timestamp exited_at = 3 {int64 seconds = 1; int32 nanos = 2}}, written here:
 * the generated code of the whole Task API is not worth loading for three fields (this runs
 * once per container, and after a daemon's crash for every container at once).
 */
export function deleteResponse(r: { pid: number; exitStatus: number; exitedAt: { seconds: number; nanos: number } }): Uint8Array {
  const { seconds, nanos } = r.exitedAt;
  // proto3: a zero field is left out.
  const ts = [...(seconds ? [0x08, ...varint(seconds)] : []), ...(nanos ? [0x10, ...varint(nanos)] : [])];
  return Uint8Array.from([
    ...(r.pid ? [0x08, ...varint(r.pid)] : []),
    ...(r.exitStatus ? [0x10, ...varint(r.exitStatus)] : []),
    0x1a,
    ts.length,
    ...ts,
  ]);
}

function varint(n: number): number[] {
  const out: number[] = [];
  for (; n > 0x7f; n = Math.floor(n / 128)) out.push((n % 128) | 0x80);
  out.push(n);
  return out;
}

/**
 * Anything mounted at `<bundle>/rootfs` or below it. The mount table is read only when the
 * directory alone cannot tell: on a node with many containers /proc/self/mountinfo has
 * thousands of lines, and this runs at every container's end (measured: 5 ms for 1,600 mounts,
 * more than the rest of this process's work). What the directory tells:
 * - another device than the bundle's: something is mounted on it (an overlay, a bind mount
 *   from another filesystem);
 * - on the bundle's device and empty: nothing is mounted below it (a mount point is an entry
 *   in it). An empty directory bind-mounted from the bundle's own filesystem would look the
 *   same; containerd unmounts the rootfs recursively right after this answer anyway
 *   (bundle.Delete, after every `shim delete`).
 * - anything else (entries in it): the mount table decides.
 */
export function rootfsMounted(bundle: string, mountTable: () => string = () => readFileSync("/proc/self/mountinfo", "utf8")): boolean {
  const path = join(bundle, "rootfs");
  let entries: string[];
  try {
    if (statSync(path).dev !== statSync(bundle).dev) return true;
    entries = readdirSync(path);
  } catch (e) {
    // No rootfs (a sandbox's bundle may have none): nothing is mounted there.
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    entries = ["?"]; // cannot tell from here: the mount table decides
  }
  if (entries.length === 0) return false;
  return mountedAtOrUnder(path, mountTable);
}

/** Anything mounted at `path` or below it, in this process's mount table. */
function mountedAtOrUnder(path: string, mountTable: () => string): boolean {
  let table: string;
  try {
    table = mountTable();
  } catch {
    return true; // cannot tell: let the unmount find out
  }
  for (const line of table.split("\n")) {
    // Field 5 is the mount point, with space, tab, newline and backslash as octal escapes.
    const at = line.split(" ")[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    if (at === path || at?.startsWith(`${path}/`)) return true;
  }
  return false;
}

/** rmdir, where "not empty" (another container of the namespace) and "gone" are expected. */
function removeIfEmpty(dir: string, warn: (m: string) => void): void {
  try {
    rmdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "ENOENT") warn(`remove ${dir}: ${String(e)}`);
  }
}
