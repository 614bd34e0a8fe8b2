// containerd's Sandbox API (containerd.runtime.sandbox.v1.Sandbox) over one pod, as a value:
// served beside the Task service on the same socket (src/runtime-v2/task-server.ts), since
// containerd's `shim` sandbox controller calls it on the connection of the shim it started
// for the sandbox id, and then hands that same address to every container of the pod.
//
// What containerd 2.4 does with it, read in its source (plugins/sandbox/controller.go,
// internal/cri/server/sandbox_*.go, core/runtime/v2/shim_manager.go):
// - RunPodSandbox: CRI makes the pod's network namespace (none for a host-network pod), then
//   the controller runs `<shim> start` with the sandbox id in a bundle of its own that has no
//   config.json, and calls CreateSandbox (options: the pod's runtime.v1.PodSandboxConfig;
//   netns_path) and StartSandbox on the address `start` printed. The pid StartSandbox answers
//   is what CRI builds every container's namespaces from (/proc/<pid>/ns/net, ipc, uts, and
//   pid when the pod shares one): ours is the serving process's, in the host's namespaces
//   (see the end of this comment). CRI then waits on WaitSandbox for as long as the pod lives.
// - CreateContainer: SandboxStatus (the pid again, and CRI's state) and Platform.
// - StartContainer: the Task API on the sandbox's address; a shim that answered `start` with
//   version 3 (containerd 2.3+) is not run again per container, nor `shim delete` after.
//   After each container's Delete containerd sends Task Shutdown, which must not end a pod
//   that is still there: the Task service asks `holdsOpen` (./task-service.ts).
// - StopPodSandbox: every container is stopped through the Task API first, then StopSandbox
//   (no timeout from CRI). RemovePodSandbox: the containers are removed, then
//   ShutdownSandbox, after which containerd closes its connection and deletes the bundle.
// - PodSandboxStats (the kubelet's pod stats): SandboxMetrics, a cgroup Metrics in `data`.
//   An error there fails CRI's whole ListPodSandboxStats, so it is answered: the pod's
//   containers' statistics added up.
//
// CRI names the pod's namespaces by our pid, the host's. The network: a pod with a namespace of
// its own (CRI made it, and set its CNI network up, before CreateSandbox named it in
// netns_path) is adopted by the host, whose containers join that namespace instead of ours
// (src/oci/pod-namespaces.ts podNetwork); a host-network pod's is ours, the host's. The rest: a
// native container joins a holder of the pod's own, made for the pod's first
// (src/runtime-v2/pod-holder.ts, released when the pod stops), a normal-mode wasm container
// gets IPC, UTS and PID namespaces of its own. CRI tears the network down and removes the
// namespace after StopSandbox.

import { statSync } from "node:fs";
import type { RuncStats } from "../linux/runc.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import { timestamp } from "./events.ts";
import type {
  CreateSandboxRequest,
  CreateSandboxResponse,
  PingRequest,
  PingResponse,
  PlatformRequest,
  PlatformResponse,
  SandboxMetricsRequest,
  SandboxMetricsResponse,
  SandboxStatusRequest,
  SandboxStatusResponse,
  ShutdownSandboxRequest,
  ShutdownSandboxResponse,
  StartSandboxRequest,
  StartSandboxResponse,
  StopSandboxRequest,
  StopSandboxResponse,
  WaitSandboxRequest,
  WaitSandboxResponse,
} from "./gen/containerd/runtime/sandbox/v1/sandbox.ts";
import type { Any } from "./gen/google/protobuf/any.ts";
import { NamespaceMode, PodSandboxConfig } from "./gen/k8s/cri/v1/pod_sandbox_config.ts";
import { criSandboxDir, type PodFilesConfig, removePodFiles, writePodFiles } from "./pod-files.ts";
import { checkSandbox, criStateOf, type SandboxCall, type SandboxState } from "./sandbox-state.ts";
import { addStats } from "./stats.ts";
import type { Logger } from "./task-host.ts";
import { namespaceContext, type TaskService } from "./task-service.ts";

/** What the pod is, as CreateSandbox told it. */
export interface PodRecord {
  id: string;
  bundle: string;
  /** CreateSandbox's options were CRI's PodSandboxConfig. */
  fromCri: boolean;
  /** The network namespace CRI made for the pod; "" for the host's. */
  netnsPath: string;
  /** From the PodSandboxConfig, when the options carried one. */
  name: string;
  /** The pod's hostname ("" for the node's): what its containers' UTS namespace is to have. */
  hostname: string;
  /** PodSandboxConfig's linux.sysctls. */
  sysctls: Record<string, string>;
  /** The OCI namespace types the pod shares with the node (see AdoptedPod). */
  nodeNamespaces: string[];
  namespace: string;
  uid: string;
  cgroupParent: string;
  hostNetwork: boolean;
  annotations: Record<string, string>;
}

export interface SandboxServiceOptions {
  /** The pod's containers. */
  tasks: TaskService;
  /** What StartSandbox and SandboxStatus report as the pod's pid: the serving process's. */
  pid: number;
  /** Statistics in the cgroup Metrics shape containerd decodes (the host's `metrics`). */
  metrics(stats: RuncStats): Any;
  log: Logger;
  /** After ShutdownSandbox is answered: close the server and release what it holds. */
  onShutdown(): void;
  /** CreateSandbox came: the host learns the pod (its network namespace, what a pause would hold). */
  adopt?(pod: PodRecord): void;
  /** Once the pod's containers are stopped: what the host holds for the pod goes (its namespace holder). */
  release?(sandboxId: string): Promise<void>;
  /** How long StopSandbox waits for a container after SIGKILL before it gives up on it. */
  killWaitMs?: number;
}

/** A container that ignored SIGKILL this long is left to Delete: StopSandbox must answer. */
const KILL_WAIT_MS = 10_000;

/** The PodSandboxConfig's type URL as containerd's typeurl writes it (the message's full name; a prefix is tolerated). */
const POD_CONFIG_TYPE = PodSandboxConfig.$type;

export class SandboxService {
  private state: SandboxState = "none";
  private record: PodRecord | undefined;
  private createdAt = new Date(0);
  private exitedAt: Date | undefined;
  private stopping: Promise<void> | undefined;
  /** CRI's directory where CreateSandbox wrote the pod's hostname, hosts and resolv.conf (./pod-files.ts). */
  private files: string | undefined;
  private readonly stoppedWaiters: (() => void)[] = [];

  constructor(private readonly o: SandboxServiceOptions) {}

  /** The pod, once CreateSandbox came. */
  get pod(): PodRecord | undefined {
    return this.record;
  }

  get current(): SandboxState {
    return this.state;
  }

  /**
   * Whether a Task Shutdown must leave the server up: a pod containerd created through this
   * API lives until ShutdownSandbox, with or without containers.
   */
  get holdsOpen(): boolean {
    return this.state === "created" || this.state === "ready" || this.state === "stopped";
  }

  async createSandbox(req: CreateSandboxRequest): Promise<CreateSandboxResponse> {
    const to = checkSandbox(req.sandboxId, this.state, "create");
    if (!req.sandboxId) throw new TtrpcError(Code.INVALID_ARGUMENT, "CreateSandbox: sandbox_id is required");
    const { record, dns } = podRecord(req);
    if (record.netnsPath) checkNetns(req.sandboxId, record.netnsPath);
    // CRI's pod: the files it mounts into each container, which a pause's controller would write.
    const files = record.fromCri ? criSandboxDir(record.bundle, record.id, this.o.log) : undefined;
    if (files) {
      try {
        writePodFiles(files, { hostname: record.hostname, ...(dns ? { dns } : {}) });
      } catch (e) {
        removePodFiles(files);
        throw new TtrpcError(Code.FAILED_PRECONDITION, `CreateSandbox ${req.sandboxId}: writing the pod's files in ${files}: ${String(e)}`);
      }
      this.files = files;
    }
    this.o.adopt?.(record);
    this.record = record;
    this.state = to;
    this.createdAt = new Date();
    this.o.log(
      `sandbox ${req.sandboxId} created (pod ${record.namespace}/${record.name}, cgroup parent ${record.cgroupParent || "none"})`,
      "debug",
    );
    return {};
  }

  async startSandbox(req: StartSandboxRequest): Promise<StartSandboxResponse> {
    this.state = this.check(req.sandboxId, "start");
    return { pid: this.o.pid, createdAt: timestamp(this.createdAt), spec: undefined };
  }

  async platform(req: PlatformRequest): Promise<PlatformResponse> {
    this.check(req.sandboxId, "platform");
    return { platform: hostPlatform() };
  }

  /**
   * Stops what the pod runs: each container gets SIGTERM and, after `timeout_secs`, SIGKILL
   * (SIGKILL at once with no timeout: CRI has stopped them with their own grace before).
   */
  async stopSandbox(req: StopSandboxRequest): Promise<StopSandboxResponse> {
    const to = this.check(req.sandboxId, "stop");
    if (to === this.state) return {}; // already stopped
    this.stopping ??= this.stopAll(req.timeoutSecs * 1000).then(async () => {
      await this.releasePod(req.sandboxId);
      if (this.state !== "shutdown") this.state = "stopped";
      this.exitedAt = new Date();
      for (const w of this.stoppedWaiters.splice(0)) w();
    });
    await this.stopping;
    return {};
  }

  async waitSandbox(req: WaitSandboxRequest): Promise<WaitSandboxResponse> {
    this.check(req.sandboxId, "wait");
    if (!this.exitedAt) await new Promise<void>((resolve) => this.stoppedWaiters.push(resolve));
    // Nothing of the pod's own exits: a stop through this API is a clean end.
    return { exitStatus: 0, exitedAt: timestamp(this.exitedAt ?? new Date()) };
  }

  async sandboxStatus(req: SandboxStatusRequest): Promise<SandboxStatusResponse> {
    this.check(req.sandboxId, "status");
    return {
      sandboxId: req.sandboxId,
      pid: this.o.pid,
      state: criStateOf(this.state),
      info: {},
      createdAt: timestamp(this.createdAt),
      exitedAt: this.exitedAt ? timestamp(this.exitedAt) : undefined,
      extra: undefined,
    };
  }

  async pingSandbox(req: PingRequest): Promise<PingResponse> {
    this.check(req.sandboxId, "ping");
    return {};
  }

  /**
   * The end: whatever still runs is killed and deleted (containerd removed the containers
   * before, unless a RunPodSandbox is being rolled back), then the server closes, taking the
   * socket with it. containerd's `shim delete` afterwards finds nothing.
   */
  async shutdownSandbox(req: ShutdownSandboxRequest): Promise<ShutdownSandboxResponse> {
    const from = this.state;
    const to = this.check(req.sandboxId, "shutdown");
    if (from === to) return {};
    this.state = to;
    if (!this.exitedAt) {
      await this.stopAll(0);
      this.exitedAt = new Date();
    }
    await this.releasePod(req.sandboxId);
    if (this.files) removePodFiles(this.files);
    for (const w of this.stoppedWaiters.splice(0)) w();
    for (const { namespace, id } of this.o.tasks.list()) {
      const r = await this.o.tasks.deleteFinal({ id, execId: "" }, namespaceContext(namespace)).catch((e) => {
        this.o.log(`sandbox ${req.sandboxId}: delete ${namespace}/${id}: ${String(e)}`, "warning");
        return undefined;
      });
      if (r?.failed.length) this.o.log(`sandbox ${req.sandboxId}: ${namespace}/${id} left: ${r.failed.join("; ")}`, "warning");
    }
    // After this answer is on its way.
    setTimeout(() => this.o.onShutdown(), 0);
    return {};
  }

  async sandboxMetrics(req: SandboxMetricsRequest): Promise<SandboxMetricsResponse> {
    this.check(req.sandboxId, "metrics");
    const stats: RuncStats[] = [];
    for (const { namespace, id } of this.o.tasks.list()) {
      // A container that has exited has no statistics any more: it adds nothing.
      const s = await this.o.tasks.runtimeStats(namespace, id).catch(() => undefined);
      if (s) stats.push(s);
    }
    return { metrics: { timestamp: timestamp(new Date()), id: req.sandboxId, data: this.o.metrics(addStats(stats)) } };
  }

  private async releasePod(id: string): Promise<void> {
    await this.o.release?.(id).catch((e) => this.o.log(`sandbox ${id}: releasing what the host holds for it: ${String(e)}`, "warning"));
  }

  /** The state a call leads to; NOT_FOUND for another sandbox's id (one pod per service). */
  private check(id: string, call: SandboxCall): SandboxState {
    if (this.record && id !== this.record.id)
      throw new TtrpcError(Code.NOT_FOUND, `${call} sandbox ${id}: not found (this shim serves ${this.record.id})`);
    return checkSandbox(id, this.state, call);
  }

  private async stopAll(graceMs: number): Promise<void> {
    const killWait = this.o.killWaitMs ?? KILL_WAIT_MS;
    await Promise.all(
      this.o.tasks.list().map(async ({ namespace, id }) => {
        const ctx = namespaceContext(namespace);
        const exited = this.o.tasks.wait({ id, execId: "" }, ctx).then(
          () => true,
          () => true, // gone already, or never to exit through this call: nothing to wait for
        );
        const kill = (signal: number) => this.o.tasks.kill({ id, execId: "", signal, all: false }, ctx).catch(() => {});
        const within = (ms: number) => Promise.race([exited, Bun.sleep(ms).then(() => false)]);
        if (graceMs > 0) {
          await kill(15);
          if (await within(graceMs)) return;
        }
        await kill(9);
        if (!(await within(killWait))) this.o.log(`sandbox: ${namespace}/${id} did not exit ${killWait} ms after SIGKILL`, "warning");
      }),
    );
  }
}

/**
 * The pod's network namespace must be one: CRI made it (a bind mount of an nsfs inode) before
 * CreateSandbox. Anything else would put the pod's containers somewhere runc or the daemon
 * cannot enter, found only at the first container's Create.
 */
function checkNetns(id: string, path: string): void {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch (e) {
    throw new TtrpcError(Code.FAILED_PRECONDITION, `CreateSandbox ${id}: the pod's network namespace ${path}: ${String(e)}`);
  }
  // Every namespace file is an inode of the kernel's one nsfs: the device of our own's.
  if (!path.startsWith("/") || st.dev !== statSync("/proc/self/ns/net").dev)
    throw new TtrpcError(Code.FAILED_PRECONDITION, `CreateSandbox ${id}: ${path} is not a network namespace`);
}

function podRecord(req: CreateSandboxRequest): { record: PodRecord; dns: PodFilesConfig["dns"] } {
  let config: PodSandboxConfig | undefined;
  const any = req.options;
  if (any?.typeUrl && (any.typeUrl === POD_CONFIG_TYPE || any.typeUrl.endsWith(`/${POD_CONFIG_TYPE}`))) {
    try {
      config = PodSandboxConfig.decode(any.value);
    } catch (e) {
      throw new TtrpcError(Code.INVALID_ARGUMENT, `CreateSandbox ${req.sandboxId}: options are not a PodSandboxConfig: ${String(e)}`);
    }
  }
  const options = config?.linux?.securityContext?.namespaceOptions;
  const network = options?.network ?? NamespaceMode.POD;
  // Without a PodSandboxConfig (not CRI), a pod with no netns of its own is on the host's.
  const hostNetwork = config ? network === NamespaceMode.NODE : !req.netnsPath;
  const dns = config?.dnsConfig;
  const record: PodRecord = {
    id: req.sandboxId,
    bundle: req.bundlePath,
    fromCri: config !== undefined,
    netnsPath: req.netnsPath,
    name: config?.metadata?.name ?? "",
    hostname: config?.hostname ?? "",
    sysctls: config?.linux?.sysctls ?? {},
    // As CRI's pause container: a host-network pod has the node's UTS namespace too.
    nodeNamespaces: [
      ...(hostNetwork ? ["network", "uts"] : []),
      ...(options?.pid === NamespaceMode.NODE ? ["pid"] : []),
      ...(options?.ipc === NamespaceMode.NODE ? ["ipc"] : []),
    ],
    namespace: config?.metadata?.namespace ?? "",
    uid: config?.metadata?.uid ?? "",
    cgroupParent: config?.linux?.cgroupParent ?? "",
    hostNetwork,
    annotations: req.annotations,
  };
  return { record, dns: dns ? { servers: dns.servers, searches: dns.searches, options: dns.options } : undefined };
}

/** containerd's platform of this host: Node's arch in OCI's words (as containerd's platforms.DefaultSpec). */
export function hostPlatform(arch: string = process.arch): { os: string; architecture: string; variant: string; osVersion: string } {
  switch (arch) {
    case "x64":
      return { os: "linux", architecture: "amd64", variant: "", osVersion: "" };
    case "arm64":
      return { os: "linux", architecture: "arm64", variant: "v8", osVersion: "" };
    default:
      throw new TtrpcError(Code.UNIMPLEMENTED, `no OCI platform known for architecture ${arch}`);
  }
}
