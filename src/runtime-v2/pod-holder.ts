// The holder of a pod's namespaces for its native (runc) containers, when the pod has no pause
// container: containerd's shim sandboxer (src/task/sandbox-service.ts). CRI names the pod's
// namespaces by the pid we answered, ours, in the host's namespaces (src/oci/pod-namespaces.ts);
// a native container must not join those. So the first native container of such a pod makes
// the holder, and every native container of the pod joins the holder's IPC, UTS and PID
// namespaces instead of ours. Its network join is the pod's (podNetwork): the namespace CRI
// made for the pod, which the holder joins too, or ours, the host's, for a host-network pod.
// A pod of wasm containers never makes one.
//
// The holder is a runc container of the pod's own (runc id: the sandbox id) that is created
// and never started: runc's init then waits for a `start` that never comes, holding the new
// namespaces, and runs nothing of an image's. Its bundle is an empty read-only root with one
// empty executable file (runc looks its process up before it waits, and never executes it),
// in `<stateDir>/<sandbox id>` like a container's work dir, so `shim delete` after a crash
// finds it and removes it the way it removes a container (./delete.ts). Its cgroup is the
// container's with the sandbox id for the container's: under the pod's cgroup parent.
//
// What a pause container does that this does not: PID 1 of a shared PID namespace reaps the
// orphans of the pod's containers; runc's waiting init does not. It is removed when the pod
// stops (StopSandbox) or ends (ShutdownSandbox).
//
// One PodHolders per host, and a host serves one pod of the shim sandboxer at most (a
// normal-mode server, a daemon's sandbox): `adopt` tells it the pod's network namespace.

import { chmodSync, closeSync, mkdirSync, openSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Runc } from "../linux/runc.ts";
import { namespacesOf, type PodNamespaces, podNetwork } from "../oci/pod-namespaces.ts";
import type { Spec } from "../oci/spec.ts";
import { type RuntimeOptions, saveRuntimeOptions } from "../task/runtime-options.ts";
import type { AdoptedPod, Logger } from "../task/task-host.ts";
import { makeWorkDir } from "../task/work-dir.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";

/** The annotation CRI marks every container of a pod with. */
const SANDBOX_ID_ANNOTATION = "io.kubernetes.cri.sandbox-id";
/** The file the holder's process names (never executed). */
const HOLDER_PROCESS = "/pod-holder";

interface Holder {
  pid: number;
  runc: Runc;
  dir: string;
}

export interface PodHolderParts {
  log: Logger;
  /** This process's pid: the one whose namespaces CRI's spec names. */
  pid: number;
  /** Marks the holder's dir as a container's work dir is marked (TaskHost.claimWorkDir): its bundle is the dir itself. */
  markWorkDir?: (c: { bundle: string; workDir: string }) => void;
}

/** The holders of one server's pods, by sandbox id. */
export class PodHolders {
  private readonly holders = new Map<string, Promise<Holder>>();
  private adopted: AdoptedPod | undefined;

  constructor(private readonly parts: PodHolderParts) {}

  /** Where the pod's containers have their namespaces: our pid CRI names, and the pod's network namespace. */
  get pod(): PodNamespaces {
    const a = this.adopted;
    if (!a) return { pid: this.parts.pid };
    return {
      pid: this.parts.pid,
      ...(a.netnsPath ? { netns: a.netnsPath } : {}),
      ...(a.hostname ? { hostname: a.hostname } : {}),
      sysctls: a.sysctls,
      node: a.nodeNamespaces,
    };
  }

  /**
   * CreateSandbox came: the pod's network namespace, the one CRI made (and set its CNI network
   * up in), or "" for the host's: a container's join of our network namespace is to this one.
   * Its hostname, sysctls and the namespaces it shares with the node are the holder's, as they
   * would be a pause container's.
   */
  adopt(pod: AdoptedPod): void {
    this.adopted = pod;
  }

  /**
   * The bundle runc is to create native container `id` from: containerd's when its spec joins
   * none of our namespaces, else a derived one in `workDir` that joins its pod's holder (made
   * now if it is the pod's first). `stateDir` is the namespace's (the holder's dir goes there).
   */
  async bundleFor(o: {
    id: string;
    bundle: string;
    workDir: string;
    stateDir: string;
    spec: Spec;
    runc: Runc;
    runtimeOptions: RuntimeOptions | null;
  }): Promise<string> {
    const node = this.pod.node ?? [];
    // Joins of ours the pod shares with the node (hostIPC, hostPID) stay: ours are the host's.
    const ours = namespacesOf(o.spec.linux?.namespaces, this.parts.pid).filter((t) => !node.includes(t));
    if (ours.length === 0) return o.bundle;
    const sandbox = o.spec.annotations?.[SANDBOX_ID_ANNOTATION];
    if (!sandbox || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(sandbox)) {
      throw new TtrpcError(
        Code.FAILED_PRECONDITION,
        `container ${o.id} would run under runc in the ${ours.join(", ")} namespaces of pid ${this.parts.pid}, this shim's (the host's), and names no pod (${SANDBOX_ID_ANNOTATION}) whose namespaces it could join instead`,
      );
    }
    let holder = this.holders.get(sandbox);
    if (!holder) {
      holder = this.make(sandbox, o);
      this.holders.set(sandbox, holder);
      holder.catch(() => this.holders.delete(sandbox));
    }
    const { pid } = await holder;
    const spec = structuredClone(o.spec);
    spec.root = { ...spec.root, path: spec.root.path.startsWith("/") ? spec.root.path : join(o.bundle, spec.root.path) };
    spec.linux = {
      ...spec.linux,
      namespaces: podNetwork(spec.linux?.namespaces, this.pod)?.map((n) =>
        n.type !== "network" && n.path !== undefined && ours.includes(n.type)
          ? { type: n.type, path: `/proc/${pid}/ns/${nsFile(n.type)}` }
          : n,
      ),
    };
    makeWorkDir(o.workDir, 0o711);
    const tmp = join(o.workDir, `.config.json.${process.pid}`);
    writeFileSync(tmp, JSON.stringify(spec), { mode: 0o600 });
    renameSync(tmp, join(o.workDir, "config.json"));
    return o.workDir;
  }

  /** Kills and removes pod `sandbox`'s holder, if it has one (the pod has stopped or ended). */
  async release(sandbox: string): Promise<void> {
    const holder = this.holders.get(sandbox);
    if (!holder) return;
    this.holders.delete(sandbox);
    const h = await holder.catch(() => null);
    if (!h) return;
    try {
      await h.runc.delete(sandbox, true);
      rmSync(h.dir, { recursive: true, force: true });
      this.parts.log(`pod ${sandbox}: its namespace holder (pid ${h.pid}) removed`, "debug");
    } catch (e) {
      // Kept: `shim delete` of the sandbox id retries through the same runc (./delete.ts).
      this.parts.log(`pod ${sandbox}: removing its namespace holder: ${String(e)}`, "warning");
    }
  }

  private async make(
    sandbox: string,
    o: { id: string; stateDir: string; spec: Spec; runc: Runc; runtimeOptions: RuntimeOptions | null },
  ): Promise<Holder> {
    const dir = join(o.stateDir, sandbox);
    const root = join(dir, "rootfs");
    mkdirSync(root, { recursive: true, mode: 0o711 });
    try {
      this.parts.markWorkDir?.({ bundle: dir, workDir: dir });
      // As a container's work dir: `shim delete` of the sandbox id asks the same runc.
      if (o.runtimeOptions) await saveRuntimeOptions(dir, o.runtimeOptions);
      const exe = join(root, HOLDER_PROCESS);
      writeFileSync(exe, "");
      chmodSync(exe, 0o555);
      writeFileSync(join(dir, "config.json"), JSON.stringify(holderSpec(o.spec, o.id, sandbox, this.pod)), { mode: 0o600 });
      const devNull = openSync("/dev/null", "r+");
      let pid: number;
      try {
        pid = await o.runc.create(sandbox, dir, join(dir, "init.pid"), [devNull, devNull, devNull], join(dir, "runtime.log"));
      } finally {
        closeSync(devNull);
      }
      this.parts.log(`pod ${sandbox}: namespace holder pid ${pid} for its native containers`, "debug");
      return { pid, runc: o.runc, dir };
    } catch (e) {
      await o.runc.delete(sandbox, true).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
      throw new TtrpcError(
        Code.FAILED_PRECONDITION,
        `pod ${sandbox}: making the holder of its namespaces for container ${o.id}: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
  }
}

/** /proc/<pid>/ns/<file> of a namespace type (OCI's names are not the kernel's for two). */
function nsFile(type: string): string {
  return type === "network" ? "net" : type === "mount" ? "mnt" : type;
}

/**
 * The holder's spec, from its pod's first native container's: new IPC, UTS, PID and mount
 * namespaces (but those the pod shares with the node), the container's network (the pod's own,
 * or a join that is not of ours; with none of these, ours: the host's), the pod's hostname
 * (else the container's) and sysctls, and its cgroup with the sandbox id for the container's.
 */
export function holderSpec(template: Spec, containerId: string, sandbox: string, pod: PodNamespaces): Spec {
  const joins = podNetwork(template.linux?.namespaces, pod);
  const ours = new Set(namespacesOf(joins, pod.pid));
  const net = joins?.find((n) => n.type === "network");
  const node = pod.node ?? [];
  // A namespace the pod shares with the node is not made: runc leaves the holder in the host's.
  const namespaces: { type: string; path?: string }[] = ["pid", "ipc", "uts", "mount"]
    .filter((t) => !node.includes(t))
    .map((type) => ({ type }));
  if (net && !ours.has("network")) namespaces.push(net);
  // As CRI's pause container: net.* sysctls only in a network namespace of the pod's own.
  const sysctl = Object.fromEntries(Object.entries(pod.sysctls ?? {}).filter(([k]) => !(node.includes("network") && k.startsWith("net."))));
  const cgroupsPath = template.linux?.cgroupsPath;
  return {
    ociVersion: template.ociVersion,
    process: {
      args: [HOLDER_PROCESS],
      cwd: "/",
      env: [],
      user: { uid: 65534, gid: 65534 },
      noNewPrivileges: true,
      capabilities: { bounding: [], effective: [], permitted: [] },
    } as Spec["process"],
    root: { path: "rootfs", readonly: true },
    // The node's UTS namespace keeps the node's name.
    ...((pod.hostname || template.hostname) && !node.includes("uts") ? { hostname: pod.hostname || template.hostname } : {}),
    // runc's init reaches its exec fifo through /proc/self/fd, and sets up /dev.
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "noexec", "mode=755", "size=64k"] },
    ],
    linux: {
      namespaces,
      ...(Object.keys(sysctl).length ? { sysctl } : {}),
      ...(cgroupsPath?.endsWith(containerId) ? { cgroupsPath: `${cgroupsPath.slice(0, -containerId.length)}${sandbox}` } : {}),
    },
  };
}
