// `shim delete`: containerd runs it when a shim is gone (crashed, or lost over a
// restart) to clean up what the shim would have. Its stdout must be exactly a
// DeleteResponse.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { findRuntime, Runc, removeQuietly } from "../linux/runc.ts";
import { unmountRootfs } from "../oci/rootfs.ts";
import { timestamp } from "../task/events.ts";
import { DeleteResponse } from "../task/gen/containerd/runtime/task/v2/shim.ts";
import type { ShimFlags } from "./flags.ts";
import { containerStateDir, runtimeRoot } from "./paths.ts";

/** What runc's shim reports for a task whose process it never saw exit: killed. */
const EXIT_UNKNOWN = 128 + 9;

export async function deleteTask(flags: ShimFlags): Promise<Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  const root = runtimeRoot(flags.namespace);
  // containerd runs us after every shim exit, clean or not: when the shim already removed
  // the container, there is nothing to ask the runtime.
  if (existsSync(join(root, flags.id))) {
    const runc = new Runc({ binary: findRuntime(process.env.BUNWASI_RUNTIME), root });
    await runc.delete(flags.id, true).catch((e) => process.stderr.write(`runtime delete: ${String(e)}\n`));
  }
  try {
    unmountRootfs(bundle);
  } catch (e) {
    process.stderr.write(`unmount rootfs: ${String(e)}\n`);
  }
  removeQuietly(join(containerStateDir(flags.namespace), flags.id));
  return DeleteResponse.encode({ pid: 0, exitStatus: EXIT_UNKNOWN, exitedAt: timestamp(new Date()) }).finish();
}
