// The ttrpc server: accepts unix-socket connections, routes each request frame to a
// registered method, runs unary and streaming handlers concurrently, and answers with
// the status codes the Go library uses. A bad frame costs at most its stream or its
// connection, never the server.

import { unlinkSync } from "node:fs";
import type { Socket, UnixSocketListener } from "bun";
import { dataFrame, decodeRequest, responseFrame, type StatusInit } from "./envelope.ts";
import { Code, TtrpcError, toStatus } from "./errors.ts";
import { Flag, type Frame, FrameType, MAX_PAYLOAD } from "./frame.ts";
import { fromWire } from "./metadata.ts";
import { MessageQueue } from "./queue.ts";
import type { CallContext, MessageType, ServiceDefinition, ServiceImplementation } from "./service.ts";
import { Wire } from "./wire.ts";

const MAX_TIMER_MS = 2 ** 31 - 1;

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
  /** Told about failures that are not any one caller's (a handler that broke the wire, a socket error). */
  onError?: (error: unknown) => void;
}

export class Server {
  private readonly services = new Map<string, Map<string, Method>>();
  private readonly listeners: { listener: UnixSocketListener<Connection>; path: string }[] = [];
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

  /** Listens on a unix socket path, replacing a stale socket file. */
  listen(path: string): void {
    try {
      unlinkSync(path);
    } catch {}
    const listener = Bun.listen<Connection>({
      unix: path,
      socket: {
        open: (socket) => {
          if (this.shuttingDown) {
            socket.terminate();
            return;
          }
          const conn = new Connection(this, socket);
          socket.data = conn;
          this.connections.add(conn);
        },
        data: (socket, chunk) => socket.data?.wire.received(chunk),
        drain: (socket) => socket.data?.wire.drained(),
        close: (socket, error) => socket.data?.wire.socketClosed(error?.message),
        error: (socket, error) => {
          this.options.onError?.(error);
          socket.data?.wire.terminate();
        },
      },
    });
    this.listeners.push({ listener, path });
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
      if (method.responseStream) void this.runStreamOut(call, () => method.handler(call.input, ctx));
      else void this.runUnary(call, () => method.handler(call.input, ctx));
      return;
    }

    let request: unknown;
    try {
      request = method.requestType.decode(req.payload);
    } catch (e) {
      this.finish(call, { code: Code.INVALID_ARGUMENT, message: `unmarshal payload error: ${errorText(e)}` }, null);
      return;
    }
    if (method.responseStream) void this.runStreamOut(call, () => method.handler(request, ctx));
    else void this.runUnary(call, () => method.handler(request, ctx));
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

  private async runStreamOut(call: Call, run: () => AsyncIterable<unknown>): Promise<void> {
    try {
      for await (const response of run()) {
        if (!this.calls.has(call.id)) return; // the loop's exit closes the handler's generator
        this.wire.send(dataFrame(call.id, 0, call.method.responseType.encode(response).finish()));
        await this.wire.writable();
      }
      if (this.calls.has(call.id)) this.finish(call, null, null);
    } catch (e) {
      this.finish(call, toStatus(e), null);
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
