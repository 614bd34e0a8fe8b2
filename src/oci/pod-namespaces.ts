// Namespaces of a spec that are the serving process's own. containerd's CRI names a pod's
// namespaces by its sandbox's pid (/proc/<pid>/ns/net, ipc, uts, and pid when the pod shares
// one); with a pause container that pid is the pause's. Under containerd's shim sandboxer (the
// Sandbox API, src/task/sandbox-service.ts) it is the pid we answered, ours: a normal-mode
// server's or the shared-mode daemon's, both in the host's namespaces. Only the network is the
// pod's to have from us: the host's for a host-network pod, else the namespace CRI made and
// named in CreateSandbox (its CNI network set up already); the other joins are not.

import type { SpecLinux } from "./spec.ts";

type Namespaces = SpecLinux["namespaces"];

/** Where a pod of the shim sandboxer has its namespaces, as a container's spec must be read. */
export interface PodNamespaces {
  /** The serving process's pid: what CRI's joins name. */
  pid: number;
  /** The pod's own network namespace (a path, CRI's); absent for a host-network pod. */
  netns?: string;
  /** The pod's hostname (PodSandboxConfig's), which its UTS namespace is to have; absent: the node's. */
  hostname?: string;
  /** The pod's sysctls, set in its namespaces (a pause container's). */
  sysctls?: Record<string, string>;
  /** OCI namespace types the pod shares with the node: joins of ours of these stay ours (the host's). */
  node?: string[];
}

/** `pid`'s own namespaces that the spec joins, by type. */
export function namespacesOf(namespaces: Namespaces, pid: number): string[] {
  const own = new RegExp(`^/proc/${pid}/ns/[a-z_]+$`);
  return (namespaces ?? []).filter((n) => n.path !== undefined && own.test(n.path)).map((n) => n.type);
}

/**
 * The spec's namespaces with its join of our network namespace made the pod's: its own when
 * it has one, else ours (the host's) as named. Every kind of container reads its network from
 * this: a wasm container in the daemon (the namespace its wasi:http sockets are made in), one
 * under runc, a native container and its pod's holder (src/runtime-v2/pod-holder.ts).
 */
export function podNetwork(namespaces: Namespaces, pod: PodNamespaces): Namespaces {
  if (namespaces === undefined || pod.netns === undefined) return namespaces;
  const own = new Set(namespacesOf(namespaces, pod.pid));
  const netns = pod.netns;
  return namespaces.map((n) => (n.type === "network" && own.has("network") ? { type: n.type, path: netns } : n));
}

/**
 * A wasm container's namespaces under runc (normal mode): its network is the pod's
 * (podNetwork), and a join of our IPC, UTS or PID namespace becomes a namespace of the
 * container's own. The module cannot tell: WASI has no call that sees IPC objects, the
 * hostname or other processes; what the pod loses is only what its wasm containers could not
 * use. A native container joins its pod's holder instead (src/runtime-v2/pod-holder.ts).
 */
export function wasmNamespaces(namespaces: Namespaces, pod: PodNamespaces): Namespaces {
  if (namespaces === undefined) return undefined;
  const own = new Set(namespacesOf(namespaces, pod.pid));
  return podNetwork(namespaces, pod)?.map((n) => (own.has(n.type) && n.type !== "network" ? { type: n.type } : n));
}
