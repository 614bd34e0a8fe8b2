// `shim delete`: containerd runs it when a shim is gone (crashed, or lost over a
// restart) to clean up what the shim would have. Its stdout must be exactly a
// DeleteResponse; containerd logs its stderr, so every cleanup step that fails is said
// there (the response has no field for it, and failing would leave containerd's record).

import { access, rm } from "node:fs/promises";
import { join } from "node:path";
import { SIGNALS, signaledStatus } from "../common/signals.ts";
import { findRuntime, Runc } from "../linux/runc.ts";
import { unmountRootfs } from "../oci/rootfs.ts";
import { timestamp } from "../task/events.ts";
import { DeleteResponse } from "../task/gen/containerd/runtime/task/v2/shim.ts";
import type { ShimFlags } from "./flags.ts";
import { containerStateDir, runtimeRoot, shimPaths } from "./paths.ts";

export async function deleteTask(flags: ShimFlags, warn: (m: string) => void = (m) => process.stderr.write(`${m}\n`)): Promise<Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  const { stateRoot } = shimPaths(process.env);
  const root = runtimeRoot(flags.namespace, stateRoot);
  // containerd runs us after every shim exit, clean or not: when the shim already removed
  // the container, there is nothing to ask the runtime.
  if (await exists(join(root, flags.id))) {
    const runc = new Runc({ binary: findRuntime(process.env.BUNWASI_RUNTIME), root });
    await runc.delete(flags.id, true).catch((e) => warn(`runtime delete: ${String(e)}`));
  }
  try {
    unmountRootfs(bundle);
  } catch (e) {
    warn(`unmount rootfs: ${String(e)}`);
  }
  const workDir = join(containerStateDir(flags.namespace, stateRoot), flags.id);
  await rm(workDir, { recursive: true, force: true }).catch((e) => warn(`remove ${workDir}: ${String(e)}`));
  // What runc's shim reports for a task whose process it never saw exit: killed.
  const status = signaledStatus(SIGNALS.SIGKILL);
  return DeleteResponse.encode({ pid: 0, exitStatus: status, exitedAt: timestamp(new Date()) }).finish();
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
