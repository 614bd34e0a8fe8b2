// The shim server and the daemon are child subreapers (prctl(PR_SET_CHILD_SUBREAPER)): runc's
// container init is orphaned when `runc create` exits, and is then reparented to us rather
// than to the host's init, so its exit is ours to see (./exit-watcher.ts) and to reap.

import { ptr } from "bun:ffi";
import { PR_GET_CHILD_SUBREAPER, PR_SET_CHILD_SUBREAPER, prctl } from "./libc.ts";

export class ReaperError extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(`${message}: errno ${errno}`);
    this.name = "ReaperError";
  }
}

/** Makes this process a child subreaper: orphaned descendants are reparented to it. */
export function becomeSubreaper(): void {
  const [r, e] = prctl(PR_SET_CHILD_SUBREAPER, 1);
  if (r < 0) throw new ReaperError("prctl(PR_SET_CHILD_SUBREAPER)", e);
}

export function isSubreaper(): boolean {
  const out = new Int32Array(1);
  const [r] = prctl(PR_GET_CHILD_SUBREAPER, ptr(out));
  return r === 0 && out[0] === 1;
}
