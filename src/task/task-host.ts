// What the Task service needs from the world around it, as values passed in: the service
// itself reads no environment, probes nothing and keeps no process-wide state, so one
// process can hold one service per sandbox, or one for every pod of a node.
//
//   TaskHost (one per service)            NamespaceHost (one per containerd namespace)
//   ├─ namespace(ns) ───────────────────▶ ├─ stateDir  per-container working files
//   ├─ createInstance(request)            └─ events    the publisher for ns's events
//   ├─ mountRootfs(bundle, mounts)
//   ├─ metrics(stats)
//   └─ log(msg, level)
//
// createInstance is where the modes differ: it prepares containerd's bundle and has it run
// (src/task/instance.ts). Normal mode's host is src/shim/normal-host.ts, a shared-mode
// sandbox's src/daemon/sandbox-host.ts; tests build fakes.

import type { RuncStats } from "../linux/runc.ts";
import type { EventSink } from "./events.ts";
import type { Any } from "./gen/google/protobuf/any.ts";
import type { Instance, InstanceRequest } from "./instance.ts";

export type LogLevel = "debug" | "info" | "warning" | "error";
export type Logger = (msg: string, level?: LogLevel) => void;

/** What a namespace has of its own: state directory, event stream. */
export interface NamespaceHost {
  /** Where per-container files go: <stateDir>/<id> (the instance's files, runtime options). */
  readonly stateDir: string;
  readonly events: EventSink;
}

export interface RootfsMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

/** What a host learns of a pod of containerd's Sandbox API at CreateSandbox. */
export interface AdoptedPod {
  id: string;
  /** The network namespace CRI made for the pod; "" for the host's. */
  netnsPath: string;
  /** "" for the node's. */
  hostname: string;
  /** The pod's sysctls (PodSandboxConfig's), a pause container's. */
  sysctls: Record<string, string>;
  /** The OCI namespace types the pod shares with the node (hostNetwork: network and uts; hostPID: pid; hostIPC: ipc). */
  nodeNamespaces: string[];
}

export interface TaskHost {
  /**
   * The namespace's state directory and publisher. Called once per namespace by a service (it
   * keeps the answer); a shared host may hand several services the same value.
   */
  namespace(ns: string): NamespaceHost;
  /**
   * Prepares containerd's bundle (rootfs mounted) and has the container created in the way
   * this host runs it; the container's init waits for Instance.start.
   */
  createInstance(request: InstanceRequest): Promise<Instance>;
  /**
   * Before a container's work dir is made: a host whose containers a crash leaves to someone
   * else to clean up makes it here and marks it as its own (shared mode: the daemon's next
   * generation sweeps what a dead one left, src/daemon/sweep.ts), after waiting, if it must,
   * for that sweep to finish with a dead daemon's container of the same id. A throw fails the
   * Create.
   */
  claimWorkDir?(container: { namespace: string; id: string; bundle: string; workDir: string }): Promise<void>;
  /** Mounts containerd's rootfs mounts on `<bundle>/rootfs`; resolves with the undo. */
  mountRootfs(bundle: string, mounts: RootfsMount[]): Promise<() => Promise<void>>;
  /** An instance's statistics as containerd decodes them (cgroup v1 or v2 Metrics). */
  metrics(stats: RuncStats): Any;
  log: Logger;
  /**
   * containerd's Sandbox API created the pod this host serves (./sandbox-service.ts): its
   * network namespace is where its containers' network is, and what a pause container would
   * have held of it (hostname, sysctls, the namespaces it shares with the node) is what the
   * holder of its native containers' namespaces has (src/runtime-v2/pod-holder.ts).
   */
  adoptPod?(pod: AdoptedPod): void;
  /**
   * A pod of containerd's Sandbox API has stopped (./sandbox-service.ts): release what the
   * host holds for it beside its containers (src/runtime-v2/pod-holder.ts).
   */
  releasePod?(sandboxId: string): Promise<void>;
}
