// One pod's sandbox in the daemon: a Task service (the same value a normal-mode shim
// serves) on a unix socket of its own, answering containerd's Task API v2 and v3 for any
// number of namespaces. containerd talks to it exactly as to a shim server; it goes away
// when containerd shuts it down (Shutdown with no container left) or the daemon stops.

import { unlink } from "node:fs/promises";
import { EVENTS_FLUSH_TIMEOUT_MS, SHUTDOWN_GRACE_MS } from "../common/constants.ts";
import type { DeleteResponse } from "../task/gen/containerd/runtime/task/v2/shim.ts";
import { TaskDefinition as TaskV2 } from "../task/gen/containerd/runtime/task/v2/shim.ts";
import { NAMESPACE_METADATA_KEY, TaskService } from "../task/task-service.ts";
import { TaskV3 } from "../task/task-v3.ts";
import { type CallContext, requireSameUser, Server, type ServerInterceptor } from "../ttrpc/index.ts";
import { type DaemonShared, type SandboxHost, type SandboxNamespace, sandboxHost } from "./sandbox-host.ts";

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
  readonly service: TaskService;
  private readonly host: SandboxHost;
  private readonly server: Server;
  private readonly namespaces = new Map<string, SandboxNamespace>();
  private closing: Promise<void> | null = null;

  constructor(
    readonly o: SandboxOptions,
    d: DaemonShared,
    private readonly onClosed: (s: Sandbox) => void,
  ) {
    // Every call in the debug log, with its outcome: the timeline of a pod.
    const trace: ServerInterceptor = async (call, next) => {
      const t0 = performance.now();
      try {
        const out = await next(call);
        d.log(`sandbox ${o.id}: ${call.method} ok ${(performance.now() - t0).toFixed(1)} ms`, "debug");
        return out;
      } catch (e) {
        d.log(`sandbox ${o.id}: ${call.method} failed ${(performance.now() - t0).toFixed(1)} ms: ${String(e)}`, "debug");
        throw e;
      }
    };
    this.server = new Server({
      onError: (e) => d.log(`sandbox ${o.namespace}/${o.id}: ttrpc: ${String(e)}`, "error"),
      // As a normal-mode shim: only a peer of our uid and gid (containerd) may drive a sandbox.
      handshaker: requireSameUser(),
      interceptors: [trace],
    });
    this.host = sandboxHost(d, o.ttrpcAddress, this.namespaces, o.containerdAddress);
    this.service = new TaskService({
      host: this.host,
      defaultNamespace: o.namespace,
      shimPid: d.pid,
      onShutdown: () => void this.close(),
    });
    this.server.register(TaskV2, this.service).register(TaskV3, this.service);
    this.server.listen(o.socket);
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

  /** Kill every wasm container with `signal` (the daemon is stopping). */
  killWasm(signal: number): void {
    this.host.killWasm(signal);
  }

  /** Stops serving: calls in flight finish, queued events are flushed, the socket goes. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const drained = this.server.shutdown(SHUTDOWN_GRACE_MS);
      const flushed = Promise.all([...this.namespaces.values()].map((ns) => ns.publisher.flushed()));
      await Promise.race([flushed, Bun.sleep(EVENTS_FLUSH_TIMEOUT_MS)]);
      await drained;
      for (const ns of this.namespaces.values()) ns.publisher.close();
      await unlink(this.o.socket).catch(() => {});
      this.onClosed(this);
    })();
    return this.closing;
  }
}

function ctxFor(ns: string): CallContext {
  // The Task service reads only the namespace from a call's context.
  return { metadata: { [NAMESPACE_METADATA_KEY]: [ns] } } as unknown as CallContext;
}
