// The ttrpc server: accepts unix-socket connections, routes each request frame to a
// registered method, runs unary and streaming handlers concurrently, and answers with
// the status codes the Go library uses. A bad frame costs at most its stream or its
// connection, never the server.

import { unlinkSync } from "node:fs";
import type { Socket, SocketHandler, SocketListener } from "bun";
import { dataFrame, decodeRequest, responseFrame, type StatusInit } from "./envelope.ts";
import { Code, TtrpcError, toStatus } from "./errors.ts";
import { Flag, type Frame, FrameType, MAX_PAYLOAD } from "./frame.ts";
import { fromWire } from "./metadata.ts";
import { MessageQueue } from "./queue.ts";
import {
  type CallContext,
  intercept,
  type MessageType,
  type ServerCall,
  type ServerInterceptor,
  type ServiceDefinition,
  type ServiceImplementation,
} from "./service.ts";
import { Wire } from "./wire.ts";

const MAX_TIMER_MS = 2 ** 31 - 1;
const NO_INTERCEPTORS: readonly ServerInterceptor[] = [];

/** Messages a client may send on one stream before its handler reads them. */
const STREAM_INPUT_LIMIT = 1024;
/**
 * Bytes of stream messages one connection may have waiting for its handlers: above
 * HIGH we stop reading from that client until they are down to LOW, so a peer cannot
 * make us hold more than about this much whatever it sends.
 */
const INBOUND_HIGH = 16 << 20;
const INBOUND_LOW = 4 << 20;

interface Method {
  service: string;
  name: string;
  requestStream: boolean;
  responseStream: boolean;
  requestType: MessageType<unknown>;
  responseType: MessageType<unknown>;
  handler: (...args: any[]) => any;
}

export interface ServerOptions {
  /**
   * Told about failures that are not any one caller's (a handler that broke the wire, a
   * socket error, a connection the handshaker refused).
   */
  onError?: (error: unknown) => void;
  /** Wrap every call, the first one outermost (see ServerInterceptor). */
  interceptors?: readonly ServerInterceptor[];
  /**
   * Runs for each accepted connection before any of its frames is read. Throwing (or
   * rejecting) closes the connection unanswered; what it returns is every call's
   * `ctx.handshake` on that connection. `requireSameUser()` is the usual one.
   */
  handshaker?: Handshaker;
}

/** An accepted connection, as a handshaker sees it. */
export interface AcceptedConnection {
  /** The connected socket's fd, for getsockopt and the like; owned by the server, do not close it. */
  readonly fd: number;
}

export type Handshaker = (conn: AcceptedConnection) => unknown;

/** Where a server listens: a unix socket path, or an fd already bound and listening (e.g. inherited from a parent). */
export type ListenTarget = string | { readonly fd: number };

export class Server {
  private readonly services = new Map<string, Map<string, Method>>();
  private readonly listeners: { listener: SocketListener<Connection>; path: string | null }[] = [];
  private readonly connections = new Set<Connection>();
  private shuttingDown = false;
  private shutdownDone: (() => void) | null = null;

  constructor(private readonly options: ServerOptions = {}) {}

  /**
   * Serves `impl` under `definition.fullName`. The same implementation may be registered
   * under several definitions (containerd's task v2 and v3 are one service under two names).
   */
  register<D extends ServiceDefinition>(definition: D, impl: ServiceImplementation<D>): this {
    if (this.services.has(definition.fullName)) throw new Error(`service ${definition.fullName} registered twice`);
    const methods = new Map<string, Method>();
    for (const [key, def] of Object.entries(definition.methods)) {
      const handler = (impl as Record<string, Method["handler"] | undefined>)[key];
      if (handler === undefined) continue;
      methods.set(def.name, {
        service: definition.fullName,
        name: def.name,
        requestStream: def.requestStream,
        responseStream: def.responseStream,
        requestType: def.requestType,
        responseType: def.responseType,
        handler: handler.bind(impl),
      });
    }
    this.services.set(definition.fullName, methods);
    return this;
  }

  /**
   * Listens on a unix socket path, replacing a stale socket file; or serves `{ fd }`, a
   * unix socket already bound and listening (see bindUnixSocket), which the server then
   * owns and closes on shutdown. A socket file bound by someone else is left in place.
   */
  listen(target: ListenTarget): void {
    const socket: SocketHandler<Connection> = {
      open: (socket) => {
        if (this.shuttingDown) {
          socket.terminate();
          return;
        }
        const conn = new Connection(this, socket);
        socket.data = conn;
        this.connections.add(conn);
        if (this.options.handshaker !== undefined) void conn.handshake(this.options.handshaker, socket);
      },
      data: (socket, chunk) => socket.data?.received(chunk),
      drain: (socket) => socket.data?.wire.drained(),
      close: (socket, error) => socket.data?.wire.socketClosed(error?.message),
      error: (socket, error) => {
        this.options.onError?.(error);
        socket.data?.wire.terminate();
      },
    };
    if (typeof target === "string") {
      try {
        unlinkSync(target);
      } catch {}
      this.listeners.push({ listener: Bun.listen<Connection>({ unix: target, socket }), path: target });
      return;
    }
    const { fd } = target;
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`ttrpc: listen({ fd }) needs a file descriptor, got ${fd}`);
    let listener: SocketListener<Connection>;
    try {
      // Bun.listen accepts `fd` (a listening socket) although its types do not say so.
      const listen = Bun.listen as unknown as (options: { fd: number; socket: SocketHandler<Connection> }) => SocketListener<Connection>;
      listener = listen({ fd, socket });
    } catch (e) {
      throw new Error(
        `ttrpc: cannot serve fd ${fd} (it must be a bound, listening unix socket, and Bun must support Bun.listen({ fd })): ${String(e)}`,
      );
    }
    this.listeners.push({ listener, path: null });
  }

  /**
   * Stops accepting, lets calls in flight finish, closes each connection once idle. After
   * `graceMs` (if given) whatever is still open is closed as by close().
   */
  shutdown(graceMs?: number): Promise<void> {
    this.shuttingDown = true;
    this.stopListening();
    const timer = graceMs === undefined ? undefined : setTimeout(() => this.close(), graceMs);
    return new Promise<void>((resolve) => {
      this.shutdownDone = resolve;
      for (const conn of this.connections) conn.closeIfIdle();
      this.checkShutdown();
    }).finally(() => clearTimeout(timer));
  }

  /** Closes every connection now; handlers still running see their signal aborted. */
  close(): void {
    this.shuttingDown = true;
    this.stopListening();
    for (const conn of this.connections) conn.wire.terminate();
    this.connections.clear();
    this.checkShutdown();
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** @internal */
  lookup(service: string, method: string): Method | TtrpcError {
    const methods = this.services.get(service);
    if (methods === undefined) return new TtrpcError(Code.UNIMPLEMENTED, `service ${service}`);
    return methods.get(method) ?? new TtrpcError(Code.UNIMPLEMENTED, `method ${method}`);
  }

  /** @internal */
  get draining(): boolean {
    return this.shuttingDown;
  }

  /** @internal */
  get interceptors(): readonly ServerInterceptor[] {
    return this.options.interceptors ?? NO_INTERCEPTORS;
  }

  /** @internal */
  reportError(error: unknown): void {
    this.options.onError?.(error);
  }

  /** @internal */
  removed(conn: Connection): void {
    this.connections.delete(conn);
    this.checkShutdown();
  }

  private stopListening(): void {
    for (const { listener, path } of this.listeners.splice(0)) {
      listener.stop(false);
      if (path === null) continue;
      try {
        unlinkSync(path);
      } catch {}
    }
  }

  private checkShutdown(): void {
    if (this.shutdownDone !== null && this.connections.size === 0) {
      const done = this.shutdownDone;
      this.shutdownDone = null;
      done();
    }
  }
}

/** One call in flight: its stream id, its cancellation and, when streaming in, its input. */
interface Call {
  readonly id: number;
  readonly method: Method;
  readonly abort: AbortController;
  input: MessageQueue<unknown> | null;
  /** Encoded sizes of the messages in `input`, oldest first. */
  sizes: number[];
  timer: ReturnType<typeof setTimeout> | undefined;
}

class Connection {
  readonly wire: Wire;
  private readonly calls = new Map<number, Call>();
  private lastStreamId = 0;
  private inbound = 0;
  /** Chunks that arrived while the handshaker ran (null once it accepted, or without one). */
  private early: Uint8Array[] | null = null;
  private handshakeResult: unknown;

  constructor(
    private readonly server: Server,
    socket: Socket<Connection>,
  ) {
    this.wire = new Wire(
      {
        frame: (f) => this.onFrame(f),
        oversize: (id, _type, length) =>
          this.refuse(id, Code.RESOURCE_EXHAUSTED, `message length ${length} exceed maximum message size of ${MAX_PAYLOAD}`),
      },
      true,
    );
    this.wire.attach(socket as Socket<unknown>);
    this.wire.onClose(() => this.onClosed());
  }

  closeIfIdle(): void {
    if (this.calls.size === 0) this.wire.end();
  }

  received(chunk: Uint8Array): void {
    if (this.early === null) this.wire.received(chunk);
    // A copy: Buffer#slice would be a view, and the chunk's memory is not ours to keep.
    else this.early.push(new Uint8Array(chunk));
  }

  /** Holds the connection's frames until `handshaker` accepts it; closes it if refused. */
  async handshake(handshaker: Handshaker, socket: Socket<Connection>): Promise<void> {
    this.early = [];
    this.wire.holdReading(true);
    try {
      // Bun's sockets have an `fd` getter that its type declarations leave out.
      const fd = (socket as unknown as { fd?: number }).fd ?? -1;
      this.handshakeResult = await handshaker({ fd });
    } catch (e) {
      this.server.reportError(e);
      this.wire.terminate();
      return;
    }
    if (this.wire.closed) return;
    if (this.server.draining) {
      // Shutdown began while this peer waited: it gets no calls, only the close.
      this.wire.end();
      return;
    }
    const early = this.early;
    this.early = null;
    this.wire.holdReading(false);
    for (const chunk of early) this.wire.received(chunk);
  }

  private onFrame(frame: Frame): void {
    const id = frame.streamId;
    if (id % 2 !== 1) {
      this.refuse(id, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams");
      return;
    }
    if (frame.type === FrameType.Request) this.onRequest(frame);
    else if (frame.type === FrameType.Data) this.onData(frame);
    // Other types are ignored, as the Go server does, for forward compatibility.
  }

  private onRequest(frame: Frame): void {
    const id = frame.streamId;
    if (id <= this.lastStreamId) {
      this.refuse(id, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment");
      return;
    }
    this.lastStreamId = id;
    let req: ReturnType<typeof decodeRequest>;
    try {
      req = decodeRequest(frame);
    } catch (e) {
      this.refuse(id, Code.INVALID_ARGUMENT, `unmarshal request error: ${errorText(e)}`);
      return;
    }
    const method = this.server.lookup(req.service, req.method);
    if (method instanceof TtrpcError) {
      this.refuse(id, method.code, method.message);
      return;
    }

    const call: Call = { id, method, abort: new AbortController(), input: null, sizes: [], timer: undefined };
    const timeoutMs = req.timeoutNano > 0 ? req.timeoutNano / 1e6 : 0;
    const ctx: CallContext = {
      service: method.service,
      method: method.name,
      metadata: fromWire(req.metadata),
      signal: call.abort.signal,
      deadline: timeoutMs > 0 ? Date.now() + timeoutMs : undefined,
      handshake: this.handshakeResult,
    };
    // Past setTimeout's range (~24.8 days) a timer would fire at once: treat as none.
    if (timeoutMs > 0 && timeoutMs <= MAX_TIMER_MS) {
      call.timer = setTimeout(
        () => this.finish(call, { code: Code.DEADLINE_EXCEEDED, message: "context deadline exceeded" }, null),
        timeoutMs,
      );
    }
    this.calls.set(id, call);

    if (method.requestStream) {
      call.input = new MessageQueue<unknown>(undefined, () => this.taken(call.sizes.shift() ?? 0));
      // A client stream may carry its first message in the request itself.
      if (req.payload.length > 0 && !this.deliver(call, req.payload)) return;
      if ((frame.flags & Flag.RemoteClosed) !== 0) call.input.end();
      this.run(call, call.input, ctx);
      return;
    }

    let request: unknown;
    try {
      request = method.requestType.decode(req.payload);
    } catch (e) {
      this.finish(call, { code: Code.INVALID_ARGUMENT, message: `unmarshal payload error: ${errorText(e)}` }, null);
      return;
    }
    this.run(call, request, ctx);
  }

  /** Runs the handler, through the interceptors if there are any. */
  private run(call: Call, request: unknown, ctx: CallContext): void {
    const { method } = call;
    const interceptors = this.server.interceptors;
    if (interceptors.length === 0) {
      if (method.responseStream) void this.runStreamOut(call, () => this.sendAll(call, method.handler(request, ctx)));
      else void this.runUnary(call, () => method.handler(request, ctx));
      return;
    }
    const first: ServerCall = {
      service: method.service,
      method: method.name,
      requestStream: method.requestStream,
      responseStream: method.responseStream,
      request,
      ctx,
    };
    if (method.responseStream) {
      void this.runStreamOut(call, () => intercept(interceptors, first, (c) => this.sendAll(call, method.handler(c.request, c.ctx))));
    } else {
      void this.runUnary(call, () => intercept(interceptors, first, async (c) => method.handler(c.request, c.ctx)));
    }
  }

  private onData(frame: Frame): void {
    const call = this.calls.get(frame.streamId);
    if (call === undefined || call.input === null) {
      this.refuse(frame.streamId, Code.INVALID_ARGUMENT, "StreamID is no longer active");
      return;
    }
    if (call.input.ended) {
      this.finish(call, { code: Code.INVALID_ARGUMENT, message: "data received after the stream was closed" }, null);
      return;
    }
    if ((frame.flags & Flag.NoData) === 0 && !this.deliver(call, frame.payload)) return;
    if ((frame.flags & Flag.RemoteClosed) !== 0) call.input.end();
  }

  private taken(size: number): void {
    this.inbound -= size;
    if (this.inbound < INBOUND_LOW) this.wire.holdReading(false);
  }

  /** Decodes one inbound stream message into the call's input; false if that ended the call. */
  private deliver(call: Call, payload: Uint8Array): boolean {
    const input = call.input!;
    if (input.size >= STREAM_INPUT_LIMIT) {
      this.finish(call, { code: Code.RESOURCE_EXHAUSTED, message: "ttrpc: stream buffer full" }, null);
      return false;
    }
    try {
      const message = call.method.requestType.decode(payload);
      call.sizes.push(payload.length);
      this.inbound += payload.length;
      if (this.inbound > INBOUND_HIGH) this.wire.holdReading(true);
      input.push(message);
      return true;
    } catch (e) {
      this.finish(call, { code: Code.INVALID_ARGUMENT, message: `data handling error: ${errorText(e)}` }, null);
      return false;
    }
  }

  private async runUnary(call: Call, run: () => unknown): Promise<void> {
    try {
      const response = await run();
      if (!this.calls.has(call.id)) return;
      this.finish(call, null, call.method.responseType.encode(response).finish());
    } catch (e) {
      this.finish(call, toStatus(e), null);
    }
  }

  /** Runs a streaming-out call to its end; the closing frame goes out once `run` settles. */
  private async runStreamOut(call: Call, run: () => Promise<unknown>): Promise<void> {
    try {
      await run();
      if (this.calls.has(call.id)) this.finish(call, null, null);
    } catch (e) {
      this.finish(call, toStatus(e), null);
    }
  }

  /** Sends a handler's responses as data frames, waiting while the peer reads slowly. */
  private async sendAll(call: Call, responses: AsyncIterable<unknown>): Promise<void> {
    for await (const response of responses) {
      if (!this.calls.has(call.id)) return; // the loop's exit closes the handler's generator
      this.wire.send(dataFrame(call.id, 0, call.method.responseType.encode(response).finish()));
      await this.wire.writable();
    }
  }

  /**
   * Ends a call once: an error is a response frame; success is a response frame for a
   * unary-out method and a closing data frame for a streaming-out one.
   */
  private finish(call: Call, status: StatusInit | null, payload: Uint8Array | null): void {
    if (this.calls.get(call.id) !== call) return;
    this.calls.delete(call.id);
    if (call.timer !== undefined) clearTimeout(call.timer);
    // What its handler will never read no longer counts against the connection.
    this.taken(call.sizes.splice(0).reduce((a, b) => a + b, 0));
    if (status !== null) {
      call.abort.abort(new TtrpcError(status.code, status.message));
      call.input?.fail(new TtrpcError(status.code, status.message));
    }
    try {
      if (status === null && call.method.responseStream) this.wire.send(dataFrame(call.id, Flag.RemoteClosed | Flag.NoData, null));
      else this.wire.send(responseFrame(call.id, status, payload));
    } catch (e) {
      // The answer itself is too large: say so on its stream instead.
      this.wire.send(responseFrame(call.id, toStatus(e), null));
    }
    if (this.server.draining && this.calls.size === 0) this.wire.end();
  }

  /** Answers a frame that never became a call. */
  private refuse(id: number, code: number, message: string): void {
    this.wire.send(responseFrame(id, { code, message }, null));
  }

  private onClosed(): void {
    const gone = new TtrpcError(Code.CANCELLED, "ttrpc: connection closed");
    for (const call of this.calls.values()) {
      if (call.timer !== undefined) clearTimeout(call.timer);
      call.abort.abort(gone);
      call.input?.fail(gone);
    }
    this.calls.clear();
    this.server.removed(this);
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
