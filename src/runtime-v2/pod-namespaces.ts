// A container must never join the namespaces of the process that serves it. containerd's CRI
// names a pod's namespaces by its sandbox's pid (/proc/<pid>/ns/net, ipc, uts, and pid when
// the pod shares one); with a pause container that pid is the pause's. Under containerd's
// shim sandboxer (the Sandbox API, src/task/sandbox-service.ts) it is the pid we answered,
// ours: a normal-mode server's or the shared-mode daemon's, both in the host's namespaces. A
// wasm container in the daemon runs on its threads and joins nothing; one run by runc would
// join the host's IPC, UTS and PID namespaces. Until such a pod has a holder of its own
// namespaces (a pause-like process made only when a runc container needs one), that is refused.

import { Code, TtrpcError } from "../ttrpc/index.ts";

interface NamespacedSpec {
  linux?: { namespaces?: { type: string; path?: string }[] };
}

/** The spec's namespaces that are process `pid`'s own (the joins refused below). */
export function namespacesOf(spec: NamespacedSpec, pid: number): string[] {
  const own = new RegExp(`^/proc/${pid}/ns/[a-z_]+$`);
  return (spec.linux?.namespaces ?? []).filter((n) => n.path !== undefined && own.test(n.path)).map((n) => n.type);
}

/**
 * FAILED_PRECONDITION, saying why, for a runc container whose spec joins the serving process's
 * namespaces. Not UNIMPLEMENTED: containerd 2.x takes that code from a task Create as "this
 * shim has no Task API v3", downgrades to v2 and tries again (seen: a 20 s stall before CRI
 * reports the error).
 */
export function refuseServerNamespaces(id: string, spec: NamespacedSpec, pid: number = process.pid): void {
  const joined = namespacesOf(spec, pid);
  if (joined.length === 0) return;
  throw new TtrpcError(
    Code.FAILED_PRECONDITION,
    `container ${id} would run under runc in the ${joined.join(", ")} namespaces of pid ${pid}, this shim's (the host's): ` +
      `a pod without a pause container (containerd's sandboxer = "shim") has no holder of its namespaces for runc containers yet; ` +
      `use the podsandbox sandboxer for such pods`,
  );
}
