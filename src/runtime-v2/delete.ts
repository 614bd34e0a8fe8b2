// `shim delete`: containerd runs it when a shim is gone (crashed, or lost over a
// restart) to clean up what the shim would have. Its stdout must be exactly a
// DeleteResponse; containerd logs its stderr, so every cleanup step that fails is said
// there (the response has no field for it, and failing would leave containerd's record).

import { access, rm, rmdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { SIGNALS, signaledStatus } from "../common/signals.ts";
import { findRuntime } from "../linux/runc.ts";
import { unmountRootfs } from "../oci/rootfs.ts";
import { unmountView, viewDir } from "../oci/wasi-view.ts";
import { timestamp } from "../task/events.ts";
import { DeleteResponse } from "../task/gen/containerd/runtime/task/v2/shim.ts";
import { loadRuntimeOptions } from "../task/runtime-options.ts";
import type { ShimFlags } from "./flags.ts";
import { containerStateDir, runtimeRoot, shimPaths } from "./paths.ts";
import { runtimeFor } from "./runtime.ts";

export async function deleteTask(flags: ShimFlags, warn: (m: string) => void = (m) => process.stderr.write(`${m}\n`)): Promise<Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  const { stateRoot } = shimPaths(process.env);
  const workDir = join(containerStateDir(flags.namespace, stateRoot), flags.id);
  // The runtime that created the container: a Create's runtime options (another binary or
  // root) are kept in its work directory for this moment (src/task/runtime-options.ts).
  const options = await loadRuntimeOptions(workDir).catch((e) => {
    warn(`runtime options: ${e instanceof Error ? e.message : String(e)}; using the default runtime`);
    return null;
  });
  const defaults = { binary: findRuntime(process.env.BUNWASI_RUNTIME), root: runtimeRoot(flags.namespace, stateRoot) };
  const runtime = runtimeFor(flags.namespace, defaults, options);
  // containerd runs us after every shim exit, clean or not: when the shim already removed
  // the container, there is nothing to ask the runtime.
  if (await exists(join(runtime.root, flags.id))) {
    await runtime.delete(flags.id, true).catch((e) => warn(`runtime delete: ${String(e)}`));
  }
  try {
    unmountRootfs(bundle);
  } catch (e) {
    warn(`unmount rootfs: ${String(e)}`);
  }
  // Shared mode: a wasm container's WASI view, mounted by the daemon in its work dir. Still
  // mounted, the work dir is not removed: a recursive removal would reach into the rootfs and
  // the volumes through it.
  let viewDown = true;
  try {
    unmountView(viewDir(workDir));
  } catch (e) {
    viewDown = false;
    warn(`unmount the module's view: ${String(e)}; ${workDir} is kept`);
  }
  if (viewDown) await rm(workDir, { recursive: true, force: true }).catch((e) => warn(`remove ${workDir}: ${String(e)}`));
  // A server removes its namespace's folders when it exits with them empty; a dead one did not.
  for (const dir of [dirname(workDir), defaults.root]) await removeIfEmpty(dir, warn);
  return killedResponse();
}

/** What runc's shim reports for a task whose process it never saw exit: killed. */
export function killedResponse(): Uint8Array {
  return DeleteResponse.encode({ pid: 0, exitStatus: signaledStatus(SIGNALS.SIGKILL), exitedAt: timestamp(new Date()) }).finish();
}

/** rmdir, where "not empty" (another container of the namespace) and "gone" are expected. */
async function removeIfEmpty(dir: string, warn: (m: string) => void): Promise<void> {
  try {
    await rmdir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "ENOENT") warn(`remove ${dir}: ${String(e)}`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
