// One pod's sandbox in the daemon: a Task service on a unix socket of its own, served as a
// normal-mode shim server serves its one (src/runtime-v2/task-server.ts), answering
// containerd's Task API v2 and v3 for any number of namespaces. containerd talks to it exactly
// as to a shim server; it goes away when containerd shuts it down (Shutdown with no container
// left, or, for a pod containerd made through the Sandbox API, ShutdownSandbox) or the daemon
// stops.

import { TaskServer } from "../runtime-v2/task-server.ts";
import type { DeleteResponse } from "../task/gen/containerd/runtime/task/v2/shim.ts";
import { namespaceContext as ctxFor, type TaskService } from "../task/task-service.ts";
import { type DaemonShared, type LiveWasm, type SandboxHost, type SandboxNamespace, sandboxHost } from "./sandbox-host.ts";

export interface SandboxOptions {
  id: string;
  namespace: string;
  /** Path of the socket to serve on. */
  socket: string;
  /** containerd's ttrpc address, where task events go. */
  ttrpcAddress: string;
  /** containerd's gRPC address, where OCI wasm artifacts are read. */
  containerdAddress?: string;
}

export class Sandbox {
  private readonly host: SandboxHost;
  private readonly server: TaskServer;
  private readonly namespaces = new Map<string, SandboxNamespace>();
  private closing: Promise<void> | null = null;

  constructor(
    readonly o: SandboxOptions,
    d: DaemonShared,
    private readonly onClosed: (s: Sandbox) => void,
  ) {
    this.host = sandboxHost(d, o.ttrpcAddress, this.namespaces, o.containerdAddress);
    this.server = new TaskServer({
      socket: o.socket,
      service: {
        host: this.host,
        defaultNamespace: o.namespace,
        shimPid: d.pid,
      },
      log: d.log,
      name: `sandbox ${o.namespace}/${o.id}`,
      // Every call in the debug log, with its outcome: the timeline of a pod.
      traceCalls: true,
      publishers: () => [...this.namespaces.values()].map((ns) => ns.publisher),
      onShutdown: () => void this.close(),
      // Under the Sandbox API (a handler with sandboxer = "shim") this sandbox is the pod, and
      // the daemon holds its namespaces: a pure-wasm pod runs no process of its own.
      sandboxPid: d.pid,
    });
  }

  get service(): TaskService {
    return this.server.service;
  }

  get address(): string {
    return `unix://${this.o.socket}`;
  }

  get containers(): number {
    return this.service.size;
  }

  get closed(): boolean {
    return this.closing !== null;
  }

  /** Does the sandbox hold container `id` of namespace `ns`? */
  async has(ns: string, id: string): Promise<boolean> {
    try {
      await this.service.state({ id, execId: "" }, ctxFor(ns));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * containerd's `shim delete` for a container of ours: kill what runs, then Delete it for
   * good (containerd forgets it after); what could not be cleaned up is in `failed`.
   */
  async deleteContainer(ns: string, id: string): Promise<DeleteResponse & { failed: string[] }> {
    const ctx = ctxFor(ns);
    await this.service.kill({ id, execId: "", signal: 9, all: true }, ctx).catch(() => {});
    return this.service.deleteFinal({ id, execId: "" }, ctx);
  }

  /** Its wasm containers whose module has not exited (the daemon's metrics). */
  liveWasm(): Iterable<LiveWasm> {
    return this.host.liveWasm();
  }

  /** Kill every wasm container with `signal` (the daemon is stopping). */
  killWasm(signal: number): void {
    this.host.killWasm(signal);
  }

  /** Stops serving: calls in flight finish, queued events are flushed, the socket goes. */
  close(): Promise<void> {
    this.closing ??= this.server.close().then(() => this.onClosed(this));
    return this.closing;
  }
}
