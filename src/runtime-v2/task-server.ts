// One Task service on one socket: what a normal-mode shim server (src/shim/serve.ts) and each
// shared-mode sandbox (src/daemon/sandbox.ts) serve to containerd, set up in one place. The
// socket is a path we bind or, for a normal-mode server, the listening fd `start` bound and
// passed as fd 3. Only a peer of our uid and gid may drive it (containerd's own shims check
// the same). Task API v2 and v3 are registered on it (the two protos differ in their package
// line only), and containerd's Sandbox API beside them (src/task/sandbox-service.ts: containerd's
// `shim` sandboxer calls it on the socket of the shim it started for the pod, then sends the
// pod's Task calls to that same socket). Closing stops accepting, lets calls in flight finish, flushes the queued events
// to containerd (up to EVENTS_FLUSH_TIMEOUT_MS) and removes the socket file.

import { rmSync } from "node:fs";
import { EVENTS_FLUSH_TIMEOUT_MS, SHUTDOWN_GRACE_MS } from "../common/constants.ts";
import { traced, tracingOn } from "../common/trace.ts";
import type { Publisher } from "../task/events.ts";
import { SandboxDefinition } from "../task/gen/containerd/runtime/sandbox/v1/sandbox.ts";
import { TaskDefinition as TaskV2 } from "../task/gen/containerd/runtime/task/v2/shim.ts";
import { SandboxService } from "../task/sandbox-service.ts";
import type { Logger } from "../task/task-host.ts";
import { NAMESPACE_METADATA_KEY, TaskService, type TaskServiceOptions } from "../task/task-service.ts";
import { TaskV3 } from "../task/task-v3.ts";
import { requireSameUser, Server, type ServerInterceptor } from "../ttrpc/index.ts";
import { LISTEN_FD_ENV } from "./flags.ts";

export interface TaskServerOptions {
  /** The socket file; served from `fd` when given (bound by someone else, still ours to remove), else bound here. */
  socket: string;
  fd?: number;
  /** The service's options; its Shutdown closes this server. */
  service: Omit<TaskServiceOptions, "onShutdown" | "holdsOpen">;
  log: Logger;
  /** Names the server in its log lines (a sandbox's pod); empty for a server that is the whole process. */
  name?: string;
  /** Log each call's method, container id, outcome and duration (debug level): the timeline of a start. */
  traceCalls?: boolean;
  /** More interceptors, after the call log (a normal-mode server's memory give-back). */
  interceptors?: ServerInterceptor[];
  /** The event publishers to flush on close (read then: namespaces are added as they are first used). */
  publishers: () => Iterable<Publisher>;
  /** After a Shutdown (Task or Sandbox API) that stopped the service (not after close() called otherwise). */
  onShutdown?: () => void;
  /** What the Sandbox API reports as the pod's pid (its namespaces' holder): the serving process. */
  sandboxPid: number;
}

export class TaskServer {
  readonly service: TaskService;
  readonly sandbox: SandboxService;
  private readonly server: Server;
  private closing: Promise<void> | null = null;

  constructor(private readonly o: TaskServerOptions) {
    const prefix = o.name ? `${o.name}: ` : "";
    this.server = new Server({
      onError: (e) => o.log(`${prefix}ttrpc: ${String(e)}`, "error"),
      handshaker: requireSameUser(),
      interceptors: [
        ...(tracingOn() ? [spanPerCall({ defaultNamespace: o.service.defaultNamespace })] : []),
        ...(o.traceCalls ? [callLog((m) => o.log(`${prefix}${m}`, "debug"))] : []),
        ...(o.interceptors ?? []),
      ],
    });
    const shutdown = () => void this.close().then(() => o.onShutdown?.());
    this.service = new TaskService({ ...o.service, onShutdown: shutdown, holdsOpen: () => this.sandbox.holdsOpen });
    this.sandbox = new SandboxService({
      tasks: this.service,
      pid: o.sandboxPid,
      metrics: (s) => o.service.host.metrics(s),
      log: (m, level) => o.log(`${prefix}${m}`, level),
      onShutdown: shutdown,
      adopt: (pod) => o.service.host.adoptPod?.(pod),
      release: (id) => o.service.host.releasePod?.(id) ?? Promise.resolve(),
    });
    this.server.register(TaskV2, this.service).register(TaskV3, this.service).register(SandboxDefinition, this.sandbox);
    this.server.listen(o.fd !== undefined ? { fd: o.fd } : o.socket);
  }

  /**
   * Stops accepting first (a `start` for this pod from now on starts or asks for a new server
   * instead of being handed one about to go), lets calls in flight finish within the grace
   * period, flushes the events, then removes the socket file.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const drained = this.server.shutdown(SHUTDOWN_GRACE_MS);
      const publishers = [...this.o.publishers()];
      await Promise.race([Promise.all(publishers.map((p) => p.flushed())), Bun.sleep(EVENTS_FLUSH_TIMEOUT_MS)]);
      await drained;
      for (const p of publishers) p.close();
      // A socket bound here is unlinked by the ttrpc server; one served from an inherited fd is not.
      rmSync(this.o.socket, { force: true });
    })();
    return this.closing;
  }
}

/** An interceptor that logs each call's method, container id, outcome and duration. */
function callLog(log: (m: string) => void): ServerInterceptor {
  return async (call, next) => {
    const t0 = performance.now();
    const id = (call.request as { id?: string } | undefined)?.id ?? "";
    try {
      const out = await next(call);
      log(`${call.method} ${id} ok ${(performance.now() - t0).toFixed(1)} ms`);
      return out;
    } catch (e) {
      log(`${call.method} ${id} failed ${(performance.now() - t0).toFixed(1)} ms: ${String(e)}`);
      throw e;
    }
  };
}

/**
 * An interceptor that runs each call as a span (only added while tracing is on, ../common/trace.ts),
 * named as containerd's otelttrpc names its own (`<service>/<method>`) and parented on the trace
 * context containerd 2.x sends in the request metadata (`traceparent`, `tracestate`: its ttrpc
 * client interceptor puts the W3C propagator's keys there).
 */
export function spanPerCall(o: { defaultNamespace?: string; idAttribute?: string } = {}): ServerInterceptor {
  const idAttribute = o.idAttribute ?? "container.id";
  return (call, next) => {
    const md = call.ctx.metadata;
    const req = call.request as { id?: string; execId?: string } | undefined;
    const attributes: Record<string, string> = { "rpc.system": "ttrpc", "rpc.service": call.service, "rpc.method": call.method };
    // containerd 1.x sends no namespace in the metadata: the server's own (-namespace) then.
    const ns = md[NAMESPACE_METADATA_KEY]?.[0] || o.defaultNamespace;
    if (ns) attributes["containerd.namespace"] = ns;
    if (typeof req?.id === "string" && req.id) attributes[idAttribute] = req.id;
    if (typeof req?.execId === "string" && req.execId) attributes["containerd.exec.id"] = req.execId;
    return traced(`${call.service}/${call.method}`, () => next(call), {
      server: true,
      attributes,
      ...(md.traceparent?.[0] !== undefined ? { traceparent: md.traceparent[0] } : {}),
      ...(md.tracestate?.[0] !== undefined ? { tracestate: md.tracestate[0] } : {}),
    });
  };
}

/**
 * The listening socket `start` bound and passed as fd 3 (src/shim/start.ts), if it did; taken
 * out of the environment, which runc and containers inherit otherwise.
 */
export function inheritedListenFd(env: Record<string, string | undefined> = process.env): number | undefined {
  const v = env[LISTEN_FD_ENV];
  delete env[LISTEN_FD_ENV];
  if (v === undefined) return undefined;
  const fd = Number(v);
  if (!Number.isInteger(fd) || fd < 3) throw new Error(`${LISTEN_FD_ENV}=${v} is not a file descriptor`);
  return fd;
}
