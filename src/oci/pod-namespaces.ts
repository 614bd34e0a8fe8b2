// Namespaces of a spec that are the serving process's own. containerd's CRI names a pod's
// namespaces by its sandbox's pid (/proc/<pid>/ns/net, ipc, uts, and pid when the pod shares
// one); with a pause container that pid is the pause's. Under containerd's shim sandboxer (the
// Sandbox API, src/task/sandbox-service.ts) it is the pid we answered, ours: a normal-mode
// server's or the shared-mode daemon's, both in the host's namespaces. Only a host-network pod
// is taken there, so the network is rightly the host's; the other joins are not.

import type { SpecLinux } from "./spec.ts";

type Namespaces = SpecLinux["namespaces"];

/** `pid`'s own namespaces that the spec joins, by type. */
export function namespacesOf(namespaces: Namespaces, pid: number): string[] {
  const own = new RegExp(`^/proc/${pid}/ns/[a-z_]+$`);
  return (namespaces ?? []).filter((n) => n.path !== undefined && own.test(n.path)).map((n) => n.type);
}

/**
 * A wasm container's namespaces under runc (normal mode): a join of `pid`'s IPC, UTS or PID
 * namespace becomes a namespace of the container's own, the network join stays (a host-network
 * pod's). The module cannot tell: WASI has no call that sees IPC objects, the hostname or other
 * processes; what the pod loses is only what its wasm containers could not use. A native
 * container joins its pod's holder instead (src/runtime-v2/pod-holder.ts).
 */
export function wasmNamespaces(namespaces: Namespaces, pid: number): Namespaces {
  if (namespaces === undefined) return undefined;
  const own = new Set(namespacesOf(namespaces, pid));
  return namespaces.map((n) => (own.has(n.type) && n.type !== "network" ? { type: n.type } : n));
}
