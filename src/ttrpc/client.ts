// The ttrpc client: one unix-socket connection, many calls in flight, each on its own
// odd stream id. Typed per-service clients come from generated definitions.

import type { Socket } from "bun";
import { dataFrame, decodeResponse, type KeyValue, type Response, requestFrame } from "./envelope.ts";
import { Code, connectionClosed, TtrpcError } from "./errors.ts";
import { Flag, type Frame, FrameType, MAX_PAYLOAD } from "./frame.ts";
import { toWire } from "./metadata.ts";
import { MessageQueue } from "./queue.ts";
import {
  type CallOptions,
  type ClientCall,
  type ClientInterceptor,
  intercept,
  type MessageType,
  type ServiceClient,
  type ServiceDefinition,
} from "./service.ts";
import { Wire } from "./wire.ts";

/** Stream ids are u32 and never reused: a connection has this many calls in it. */
const LAST_STREAM_ID = 0xffff_ffff;

/** What a pending call wants from the frames of its stream. */
interface Pending {
  frame(frame: Frame): void;
  fail(error: TtrpcError): void;
}

export interface ConnectOptions {
  /** Gives up connecting after this long. */
  timeoutMs?: number;
  /** Wrap every call made on this connection, the first one outermost (see ClientInterceptor). */
  interceptors?: readonly ClientInterceptor[];
}

export class Client {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closeReason: TtrpcError | null = null;
  private readonly closedWaiters: (() => void)[] = [];

  private constructor(
    private readonly wire: Wire,
    private readonly interceptors: readonly ClientInterceptor[],
  ) {
    wire.onClose((reason) => this.onClosed(reason));
  }

  /** Connects to a ttrpc server listening on a unix socket path. */
  static async connect(path: string, options: ConnectOptions = {}): Promise<Client> {
    let client: Client | null = null;
    const wire = new Wire(
      {
        frame: (f) => client?.onFrame(f),
        oversize: (id, _t, length) =>
          client?.failCall(
            id,
            new TtrpcError(Code.RESOURCE_EXHAUSTED, `message length ${length} exceed maximum message size of ${MAX_PAYLOAD}`),
          ),
      },
      false,
    );
    client = new Client(wire, options.interceptors ?? []);
    const connecting = Bun.connect<Wire>({
      unix: path,
      data: wire,
      socket: {
        data: (s, chunk) => s.data.received(chunk),
        drain: (s) => s.data.drained(),
        close: (s, error) => s.data.socketClosed(error?.message),
        error: (s, error) => s.data.socketClosed(error.message),
        connectError: (_s, error) => wire.socketClosed(error.message),
      },
    });
    let socket: Socket<Wire>;
    try {
      socket = await withTimeout(connecting, options.timeoutMs, `ttrpc: connect ${path} timed out`);
    } catch (e) {
      // A connect that completes after we gave up must not leave its socket open.
      connecting.then((s) => s.terminate()).catch(() => {});
      throw e;
    }
    wire.attach(socket as Socket<unknown>);
    return client;
  }

  /** A typed client for a generated service definition. */
  service<D extends ServiceDefinition>(definition: D): ServiceClient<D> {
    const out: Record<string, unknown> = {};
    for (const [key, m] of Object.entries(definition.methods)) {
      const call = { service: definition.fullName, method: m.name, requestType: m.requestType, responseType: m.responseType };
      let send: (request: any, options?: CallOptions) => unknown;
      if (m.requestStream && m.responseStream) send = (reqs, o) => this.bidiStream(call, reqs, o);
      else if (m.requestStream) send = (reqs, o) => this.clientStream(call, reqs, o);
      else if (m.responseStream) send = (req, o) => this.serverStream(call, req, o);
      else send = (req, o) => this.unary(call, req, o);
      out[key] = this.interceptors.length === 0 ? send : this.intercepted(call, m.requestStream, m.responseStream, send);
    }
    return out as ServiceClient<D>;
  }

  /** A unary call with an already encoded payload; resolves to the encoded answer. */
  call(service: string, method: string, payload: Uint8Array, options: CallOptions = {}): Promise<Uint8Array> {
    if (this.interceptors.length > 0) {
      const send = (p: Uint8Array, o: CallOptions = {}) => this.oneAnswer(service, method, p, 0, o, null);
      return this.intercepted({ service, method }, false, false, send)(payload, options) as Promise<Uint8Array>;
    }
    return this.oneAnswer(service, method, payload, 0, options, null);
  }

  /**
   * A method that runs its calls through the interceptors. A streaming answer is an
   * iterator at once, as without interceptors; its messages flow through as they arrive,
   * and it ends (or fails) when the interceptors' promise settles.
   */
  private intercepted(
    ref: { service: string; method: string },
    requestStream: boolean,
    responseStream: boolean,
    send: (request: any, options?: CallOptions) => unknown,
  ): (request: unknown, options?: CallOptions) => unknown {
    const interceptors = this.interceptors;
    const info = { service: ref.service, method: ref.method, requestStream, responseStream };
    if (!responseStream) {
      return (request, options = {}) =>
        intercept<ClientCall>(interceptors, { ...info, request, options }, (c) => send(c.request, c.options) as Promise<unknown>);
    }
    return (request, options = {}) => {
      let inner: AsyncIterator<unknown> | null = null;
      let stopped = false;
      // If the caller stops reading, the call underneath is stopped too.
      const out = new MessageQueue<unknown>(() => {
        stopped = true;
        void inner?.return?.();
      });
      const last = async (c: ClientCall) => {
        inner = (send(c.request, c.options) as AsyncIterable<unknown>)[Symbol.asyncIterator]();
        for (;;) {
          if (stopped) return void (await inner.return?.());
          const r = await inner.next();
          if (r.done) return undefined;
          out.push(r.value);
        }
      };
      intercept<ClientCall>(interceptors, { ...info, request, options }, last).then(
        () => out.end(),
        (e) => out.fail(e),
      );
      return out;
    };
  }

  /** Resolves when the connection has closed, for whatever reason. */
  get closed(): Promise<void> {
    if (this.closeReason !== null) return Promise.resolve();
    return new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  get isClosed(): boolean {
    return this.closeReason !== null;
  }

  /** Closes the connection; calls in flight fail with UNAVAILABLE. */
  close(): void {
    this.wire.terminate();
  }

  // --- call kinds -------------------------------------------------------------

  private async unary(c: MethodRef, request: unknown, options: CallOptions = {}): Promise<unknown> {
    const payload = c.requestType.encode(request).finish();
    return decodeAnswer(c, await this.oneAnswer(c.service, c.method, payload, 0, options, null));
  }

  private serverStream(c: MethodRef, request: unknown, options: CallOptions = {}): AsyncIterable<unknown> {
    const payload = c.requestType.encode(request).finish();
    return this.streamOut(c, payload, Flag.RemoteClosed, options, null);
  }

  private async clientStream(
    c: MethodRef,
    requests: Iterable<unknown> | AsyncIterable<unknown>,
    options: CallOptions = {},
  ): Promise<unknown> {
    return decodeAnswer(
      c,
      await this.oneAnswer(c.service, c.method, new Uint8Array(0), Flag.RemoteOpen, options, { type: c.requestType, requests }),
    );
  }

  /**
   * A call answered by one response frame, OK or not: a unary call, or a client stream
   * whose messages are pumped out meanwhile.
   */
  private oneAnswer(
    service: string,
    method: string,
    payload: Uint8Array,
    flags: number,
    options: CallOptions,
    stream: { type: MessageType<unknown>; requests: Iterable<unknown> | AsyncIterable<unknown> } | null,
  ): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      let id = 0;
      let disarm = noop;
      const finish = (err: TtrpcError | null, answer?: Uint8Array) => {
        disarm();
        this.pending.delete(id);
        if (err !== null) reject(err);
        else resolve(answer!);
      };
      id = this.open(service, method, payload, flags, options, {
        frame: (f) => {
          if (f.type !== FrameType.Response) return finish(protocolError(f));
          const resp = decodeResponseSafely(f);
          if (resp instanceof TtrpcError) return finish(resp);
          finish(statusError(resp), resp.payload);
        },
        fail: (e) => finish(e),
      });
      if (!this.pending.has(id)) return;
      disarm = this.guard(options, (e) => finish(e));
      if (stream !== null) void this.pump(id, stream.type, stream.requests, (e) => finish(e));
    });
  }

  private bidiStream(
    c: MethodRef,
    requests: Iterable<unknown> | AsyncIterable<unknown>,
    options: CallOptions = {},
  ): AsyncIterable<unknown> {
    return this.streamOut(c, new Uint8Array(0), Flag.RemoteOpen, options, requests);
  }

  /** A call whose answers stream back: data frames, then a closing data frame or an error response. */
  private streamOut(
    c: MethodRef,
    payload: Uint8Array,
    flags: number,
    options: CallOptions,
    requests: Iterable<unknown> | AsyncIterable<unknown> | null,
  ): AsyncIterable<unknown> {
    let id = 0;
    let disarm = noop;
    const stop = () => {
      disarm();
      this.pending.delete(id);
    };
    // If the consumer stops reading, the stream is forgotten (ttrpc cannot tell the server).
    const out = new MessageQueue<unknown>(stop);
    const fail = (e: TtrpcError) => {
      stop();
      out.fail(e);
    };
    id = this.open(c.service, c.method, payload, flags, options, {
      frame: (f) => {
        if (f.type === FrameType.Response) {
          const resp = decodeResponseSafely(f);
          if (resp instanceof TtrpcError) return fail(resp);
          const err = statusError(resp);
          if (err !== null) return fail(err);
          // An OK response frame also ends the stream (a Go streaming handler that
          // returns a message answers this way).
          stop();
          if (resp.payload.length > 0) out.push(c.responseType.decode(resp.payload));
          return out.end();
        }
        if (f.type !== FrameType.Data) return fail(protocolError(f));
        if ((f.flags & Flag.NoData) === 0) {
          try {
            out.push(c.responseType.decode(f.payload));
          } catch (e) {
            return fail(new TtrpcError(Code.INTERNAL, `ttrpc: bad stream message: ${String(e)}`));
          }
        }
        if ((f.flags & Flag.RemoteClosed) !== 0) {
          stop();
          out.end();
        }
      },
      fail,
    });
    if (this.pending.has(id)) {
      disarm = this.guard(options, fail);
      if (requests !== null) void this.pump(id, c.requestType, requests, fail);
    }
    return out;
  }

  /** Sends a client stream's messages as data frames, then the closing frame. */
  private async pump(
    id: number,
    type: MessageType<unknown>,
    requests: Iterable<unknown> | AsyncIterable<unknown>,
    fail: (e: TtrpcError) => void,
  ): Promise<void> {
    try {
      for await (const req of requests) {
        if (!this.pending.has(id)) return;
        if (!this.wire.send(dataFrame(id, 0, type.encode(req).finish()))) throw connectionClosed();
        await this.wire.writable();
      }
      if (this.pending.has(id)) this.wire.send(dataFrame(id, Flag.RemoteClosed | Flag.NoData, null));
    } catch (e) {
      if (this.pending.has(id))
        fail(e instanceof TtrpcError ? e : new TtrpcError(Code.CANCELLED, `ttrpc: request stream failed: ${String(e)}`));
    }
  }

  // --- plumbing -----------------------------------------------------------------

  /**
   * Sends the request frame and registers the call. On a synchronous failure (closed,
   * oversize, ids used up) the call's `fail` runs at once and nothing is registered.
   */
  private open(service: string, method: string, payload: Uint8Array, flags: number, options: CallOptions, p: Pending): number {
    const id = this.nextId;
    if (this.closeReason !== null) {
      p.fail(this.closeReason);
      return id;
    }
    if (id > LAST_STREAM_ID) {
      p.fail(new TtrpcError(Code.RESOURCE_EXHAUSTED, "ttrpc: stream ids exhausted on this connection; open a new one"));
      return id;
    }
    const metadata: KeyValue[] = toWire(options.metadata);
    const timeoutNano = options.timeoutMs !== undefined && options.timeoutMs > 0 ? Math.round(options.timeoutMs * 1e6) : 0;
    let frame: Uint8Array;
    try {
      frame = requestFrame(id, flags, { service, method, payload, timeoutNano, metadata });
    } catch (e) {
      p.fail(e instanceof TtrpcError ? e : new TtrpcError(Code.INTERNAL, String(e)));
      return id;
    }
    this.nextId += 2;
    this.pending.set(id, p);
    this.wire.send(frame);
    return id;
  }

  /** Arms the call's timeout and abort signal; returns the function that disarms them. */
  private guard(options: CallOptions, fail: (e: TtrpcError) => void): () => void {
    const { timeoutMs, signal } = options;
    if ((timeoutMs === undefined || timeoutMs <= 0) && signal === undefined) return noop;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => {
      fail(new TtrpcError(Code.CANCELLED, `ttrpc: call cancelled: ${String(signal?.reason ?? "aborted")}`));
    };
    if (timeoutMs !== undefined && timeoutMs > 0 && timeoutMs <= 2 ** 31 - 1) {
      timer = setTimeout(() => fail(new TtrpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded")), timeoutMs);
    }
    if (signal !== undefined) {
      if (signal.aborted) queueMicrotask(onAbort);
      else signal.addEventListener("abort", onAbort, { once: true });
    }
    return () => {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
  }

  private onFrame(frame: Frame): void {
    // Frames for a stream we no longer wait on (timed out, cancelled) are dropped.
    this.pending.get(frame.streamId)?.frame(frame);
  }

  private failCall(id: number, error: TtrpcError): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    p.fail(error);
  }

  private onClosed(reason?: string): void {
    this.closeReason = connectionClosed(reason);
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.fail(this.closeReason);
    for (const w of this.closedWaiters.splice(0)) w();
  }
}

interface MethodRef {
  service: string;
  method: string;
  requestType: MessageType<unknown>;
  responseType: MessageType<unknown>;
}

function noop(): void {}

function decodeAnswer(c: MethodRef, answer: Uint8Array): unknown {
  try {
    return c.responseType.decode(answer);
  } catch (e) {
    throw new TtrpcError(Code.INTERNAL, `ttrpc: bad response payload: ${String(e)}`);
  }
}

function statusError(resp: Response): TtrpcError | null {
  const st = resp.status;
  if (st === undefined || st.code === Code.OK) return null;
  return new TtrpcError(
    st.code,
    st.message,
    st.details.map((d) => ({ typeUrl: d.typeUrl, value: d.value })),
  );
}

function decodeResponseSafely(frame: Frame): Response | TtrpcError {
  try {
    return decodeResponse(frame);
  } catch (e) {
    return new TtrpcError(Code.INTERNAL, `ttrpc: malformed response: ${String(e)}`);
  }
}

function protocolError(frame: Frame): TtrpcError {
  return new TtrpcError(Code.INTERNAL, `ttrpc: unexpected frame type ${frame.type} on stream ${frame.streamId}`);
}

async function withTimeout<T>(p: Promise<T>, ms: number | undefined, message: string): Promise<T> {
  if (ms === undefined) return p;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TtrpcError(Code.DEADLINE_EXCEEDED, message)), ms);
  });
  try {
    return await Promise.race([p, expired]);
  } finally {
    clearTimeout(timer);
  }
}
