// A small gRPC client over HTTP/2 on a unix socket (node:http2, which Bun implements), for
// containerd's own API: the shim's callbacks into containerd (src/containerd/client.ts).
// containerd serves gRPC (not ttrpc) on the socket it passes shims as `-address`.
//
// What gRPC adds to HTTP/2 is small, and this is all of it we use: a POST to
// /<package.Service>/<Method> with `content-type: application/grpc` and `te: trailers`;
// each message framed as 1 byte "compressed" (always 0 here) + 4 bytes big-endian length;
// the call's outcome in `grpc-status` / `grpc-message` trailers (or in the headers, for a
// response with no body). Metadata are plain headers (containerd-namespace, containerd-lease).
//
// One HTTP/2 session per client, many concurrent streams on it. Unary calls, server streams
// (content Read) and bidirectional streams (content Write) share one stream implementation.

import { type ClientHttp2Session, type ClientHttp2Stream, connect } from "node:http2";
import { createConnection } from "node:net";
import { GrpcCode, GrpcError } from "./errors.ts";

export { GrpcCode, GrpcError };

/** What a ts-proto message type offers (encode/decode), as generic-definitions emit them. */
export interface MessageType<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
  fromPartial?(object: unknown): T;
}

export interface MethodDefinition<Req, Res> {
  name: string;
  requestType: MessageType<Req>;
  responseType: MessageType<Res>;
  requestStream: boolean;
  responseStream: boolean;
}

export interface ServiceDefinition {
  fullName: string;
  methods: Record<string, MethodDefinition<any, any>>;
}

export type Metadata = Record<string, string>;

/** A call in flight: send requests, receive responses, end the request side. */
export interface Call<Req, Res> {
  send(message: Req): void;
  /** The next response, or undefined when the server ended the stream with OK. Throws GrpcError. */
  recv(): Promise<Res | undefined>;
  /** No more requests (half-close). */
  end(): void;
  /** Abandon the call (RST_STREAM CANCEL). */
  cancel(): void;
}

function frame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + payload.length);
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}

/** grpc-message is percent-encoded (gRPC over HTTP/2, "Responses"). */
function decodeMessage(v: unknown): string {
  if (typeof v !== "string") return "";
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

export class GrpcClient {
  private session: ClientHttp2Session | undefined;
  private closed = false;

  constructor(
    readonly socketPath: string,
    private readonly defaults: { timeoutMs?: number } = {},
  ) {}

  private connection(): ClientHttp2Session {
    if (this.closed) throw new Error("gRPC client is closed");
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const s = connect("http://localhost", { createConnection: () => createConnection(this.socketPath) });
    // A dead session is replaced by the next call; errors reach the streams that were open.
    s.on("error", () => {});
    s.on("close", () => {
      if (this.session === s) this.session = undefined;
    });
    // The shim's server must be able to exit while a client is idle.
    s.unref();
    this.session = s;
    return s;
  }

  /** Start a call of any shape. */
  call<Req, Res>(
    service: ServiceDefinition,
    method: MethodDefinition<Req, Res>,
    metadata: Metadata = {},
    opts: { timeoutMs?: number } = {},
  ): Call<Req, Res> {
    const path = `/${service.fullName}/${method.name}`;
    const timeoutMs = opts.timeoutMs ?? this.defaults.timeoutMs ?? 30_000;
    const stream: ClientHttp2Stream = this.connection().request(
      {
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-timeout": `${Math.max(1, Math.ceil(timeoutMs))}m`,
        ...metadata,
      },
      { endStream: false },
    );
    // Responses waiting for a reader, readers waiting for a response.
    const ready: Res[] = [];
    const waiting: { resolve: (v: Res | undefined) => void; reject: (e: Error) => void }[] = [];
    let buffered = new Uint8Array(0);
    let outcome: { error?: GrpcError } | undefined;
    let headerStatus: { code: number; message: string } | undefined;

    const settle = (error?: GrpcError) => {
      if (outcome) return;
      outcome = error ? { error } : {};
      clearTimeout(timer);
      for (const w of waiting.splice(0)) error ? w.reject(error) : w.resolve(undefined);
    };
    const timer = setTimeout(() => {
      settle(new GrpcError(GrpcCode.DEADLINE_EXCEEDED, `no answer within ${timeoutMs} ms`, path));
      stream.close();
    }, timeoutMs);
    timer.unref?.();

    const statusFrom = (h: Record<string, unknown>) => {
      const s = h["grpc-status"];
      if (s === undefined) return undefined;
      return { code: Number(s), message: decodeMessage(h["grpc-message"]) };
    };
    stream.on("response", (headers) => {
      const status = Number(headers[":status"]);
      if (status !== 200) {
        settle(new GrpcError(GrpcCode.UNKNOWN, `HTTP status ${status}`, path));
        return;
      }
      // A "trailers-only" response carries the status in the headers.
      headerStatus = statusFrom(headers as Record<string, unknown>);
    });
    stream.on("data", (chunk: Uint8Array) => {
      const joined = new Uint8Array(buffered.length + chunk.length);
      joined.set(buffered);
      joined.set(chunk, buffered.length);
      buffered = joined;
      while (buffered.length >= 5) {
        const len = new DataView(buffered.buffer, buffered.byteOffset).getUint32(1);
        if (buffered.length < 5 + len) break;
        if (buffered[0] !== 0) {
          settle(new GrpcError(GrpcCode.INTERNAL, "compressed response, never asked for", path));
          stream.close();
          return;
        }
        const msg = method.responseType.decode(buffered.subarray(5, 5 + len));
        buffered = buffered.slice(5 + len);
        const w = waiting.shift();
        if (w) w.resolve(msg);
        else ready.push(msg);
      }
    });
    stream.on("trailers", (trailers) => {
      const s = statusFrom(trailers as Record<string, unknown>);
      if (s) headerStatus = s;
    });
    stream.on("close", () => {
      const s = headerStatus;
      if (!s) settle(new GrpcError(GrpcCode.UNAVAILABLE, `stream closed without a status (HTTP/2 code ${stream.rstCode})`, path));
      else if (s.code !== GrpcCode.OK) settle(new GrpcError(s.code, s.message, path));
      else settle();
    });
    stream.on("error", (e: Error) => settle(new GrpcError(GrpcCode.UNAVAILABLE, e.message, path)));

    return {
      send: (message) => {
        if (outcome) return;
        stream.write(frame(method.requestType.encode(message).finish()));
      },
      recv: () => {
        const m = ready.shift();
        if (m !== undefined) return Promise.resolve(m);
        if (outcome) return outcome.error ? Promise.reject(outcome.error) : Promise.resolve(undefined);
        return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
      },
      end: () => {
        if (!stream.writableEnded) stream.end();
      },
      cancel: () => {
        settle(new GrpcError(GrpcCode.CANCELLED, "cancelled", path));
        stream.close();
      },
    };
  }

  /** One request, one response. */
  async unary<Req, Res>(service: ServiceDefinition, method: MethodDefinition<Req, Res>, req: Req, metadata?: Metadata): Promise<Res> {
    const c = this.call(service, method, metadata);
    c.send(req);
    c.end();
    const res = await c.recv();
    // Drain to the status: a response followed by an error status is an error.
    if (res === undefined) throw new GrpcError(GrpcCode.INTERNAL, "no response message", `/${service.fullName}/${method.name}`);
    while ((await c.recv()) !== undefined) {}
    return res;
  }

  /** One request, a stream of responses. */
  async *serverStream<Req, Res>(
    service: ServiceDefinition,
    method: MethodDefinition<Req, Res>,
    req: Req,
    metadata?: Metadata,
  ): AsyncGenerator<Res> {
    const c = this.call(service, method, metadata);
    c.send(req);
    c.end();
    try {
      for (;;) {
        const m = await c.recv();
        if (m === undefined) return;
        yield m;
      }
    } finally {
      c.cancel();
    }
  }

  close(): void {
    this.closed = true;
    this.session?.close();
    this.session = undefined;
  }
}
