// A container under runc must never join the namespaces of the process that serves it (see
// src/oci/pod-namespaces.ts for when a spec names them: under containerd's shim sandboxer).
// A wasm container in normal mode gets its own instead (the derived bundle, src/oci/bundle.ts);
// a native one would share the host's IPC, UTS and PID namespaces with no way round it until
// such a pod has a holder of its namespaces (a pause-like process made only when a runc
// container needs one), so it is refused.

import { namespacesOf } from "../oci/pod-namespaces.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";

interface NamespacedSpec {
  linux?: { namespaces?: { type: string; path?: string }[] };
}

/**
 * FAILED_PRECONDITION, saying why, for a runc container whose spec joins the serving process's
 * namespaces. Not UNIMPLEMENTED: containerd 2.x takes that code from a task Create as "this
 * shim has no Task API v3", downgrades to v2 and tries again (seen: a 20 s stall before CRI
 * reports the error).
 */
export function refuseServerNamespaces(id: string, spec: NamespacedSpec, pid: number = process.pid): void {
  const joined = namespacesOf(spec.linux?.namespaces, pid);
  if (joined.length === 0) return;
  throw new TtrpcError(
    Code.FAILED_PRECONDITION,
    `container ${id} would run under runc in the ${joined.join(", ")} namespaces of pid ${pid}, this shim's (the host's): ` +
      `a pod without a pause container (containerd's sandboxer = "shim") has no holder of its namespaces for runc containers yet; ` +
      `use the podsandbox sandboxer for such pods`,
  );
}
