// Service definitions as ts-proto emits them with `outputServices=generic-definitions`,
// and the handler and client shapes derived from them. A generated definition plugs
// into Server.register and Client.service with no glue.

import type { Metadata, MetadataInit } from "./metadata.ts";

/** What ts-proto generates for each message: enough to put it on and take it off the wire. */
export interface MessageType<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
}

export interface MethodDefinition<Req = any, Res = any, ReqStream extends boolean = boolean, ResStream extends boolean = boolean> {
  readonly name: string;
  readonly requestType: MessageType<Req>;
  readonly requestStream: ReqStream;
  readonly responseType: MessageType<Res>;
  readonly responseStream: ResStream;
}

export interface ServiceDefinition {
  readonly name: string;
  /** The service name on the wire, e.g. "containerd.task.v2.Task". */
  readonly fullName: string;
  readonly methods: { readonly [key: string]: MethodDefinition };
}

/** What a handler learns about its call. */
export interface CallContext {
  readonly service: string;
  readonly method: string;
  readonly metadata: Metadata;
  /** Aborted when the deadline passes, the client goes away or the server closes. */
  readonly signal: AbortSignal;
  /** Epoch milliseconds of the caller's deadline, if it sent one. */
  readonly deadline: number | undefined;
  /**
   * What the server's handshaker returned for this call's connection (for requireSameUser,
   * the peer's PeerCredentials); undefined when the server has no handshaker.
   */
  readonly handshake?: unknown;
}

type Awaitable<T> = T | Promise<T>;

export type MethodHandler<M> =
  M extends MethodDefinition<infer Req, infer Res, infer ReqStream, infer ResStream>
    ? ReqStream extends true
      ? ResStream extends true
        ? (requests: AsyncIterable<Req>, ctx: CallContext) => AsyncIterable<Res>
        : (requests: AsyncIterable<Req>, ctx: CallContext) => Awaitable<Res>
      : ResStream extends true
        ? (request: Req, ctx: CallContext) => AsyncIterable<Res>
        : (request: Req, ctx: CallContext) => Awaitable<Res>
    : never;

/** A handler per method; a missing one answers UNIMPLEMENTED. */
export type ServiceImplementation<D extends ServiceDefinition> = {
  [K in keyof D["methods"]]?: MethodHandler<D["methods"][K]>;
};

export interface CallOptions {
  metadata?: MetadataInit;
  /** Fails the call with DEADLINE_EXCEEDED after this long; the server is told too. */
  timeoutMs?: number;
  /** Aborting fails the call with CANCELLED (ttrpc has no cancel frame: the server is not told). */
  signal?: AbortSignal;
}

export type ClientMethod<M> =
  M extends MethodDefinition<infer Req, infer Res, infer ReqStream, infer ResStream>
    ? ReqStream extends true
      ? ResStream extends true
        ? (requests: AsyncIterable<Req> | Iterable<Req>, options?: CallOptions) => AsyncIterable<Res>
        : (requests: AsyncIterable<Req> | Iterable<Req>, options?: CallOptions) => Promise<Res>
      : ResStream extends true
        ? (request: Req, options?: CallOptions) => AsyncIterable<Res>
        : (request: Req, options?: CallOptions) => Promise<Res>
    : never;

export type ServiceClient<D extends ServiceDefinition> = {
  [K in keyof D["methods"]]: ClientMethod<D["methods"][K]>;
};

/** Which method a call is for and what kind of call it is; both interceptor kinds see it. */
export interface CallInfo {
  /** The service name on the wire, e.g. "containerd.task.v2.Task". */
  readonly service: string;
  readonly method: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
}

/** A call as a server interceptor sees it, before its handler runs. */
export interface ServerCall extends CallInfo {
  /**
   * The decoded request for unary and server-streaming methods; for client-streaming and
   * bidi methods, the AsyncIterable of requests the handler will read.
   */
  readonly request: unknown;
  readonly ctx: CallContext;
}

/**
 * Wraps every call a server serves. `next` runs the rest of the chain and then the handler,
 * with the call it is given (pass a changed copy to change the request or the context). It
 * resolves to the response of a unary-out method, or, for a method that streams responses,
 * to undefined once the handler's last message has been queued; the call ends (OK, or with
 * what the interceptor throws) only when the interceptor's promise settles. Not calling
 * `next` skips the handler: throw a TtrpcError to refuse the call with its code.
 */
export type ServerInterceptor = (call: ServerCall, next: (call: ServerCall) => Promise<unknown>) => Promise<unknown>;

/** A call as a client interceptor sees it, before anything is sent. */
export interface ClientCall extends CallInfo {
  /**
   * The request message for unary and server-streaming methods, the (Async)Iterable of
   * requests for client-streaming and bidi ones, and the encoded bytes for Client.call.
   */
  readonly request: unknown;
  readonly options: CallOptions;
}

/**
 * Wraps every call a client makes. `next` sends the call it is given (pass a changed copy
 * to add metadata or a deadline) and resolves to the response (the encoded bytes for
 * Client.call), or, for a streaming response, to undefined once the server ended the stream;
 * the caller's iterator ends only when the interceptor's promise settles. What an
 * interceptor throws is what the caller sees.
 */
export type ClientInterceptor = (call: ClientCall, next: (call: ClientCall) => Promise<unknown>) => Promise<unknown>;

/** @internal Runs `call` through `interceptors` (the first one outermost), then `last`. */
export function intercept<C>(
  interceptors: readonly ((call: C, next: (call: C) => Promise<unknown>) => Promise<unknown>)[],
  call: C,
  last: (call: C) => Promise<unknown>,
): Promise<unknown> {
  const step = (i: number, c: C): Promise<unknown> => {
    const interceptor = interceptors[i];
    // A synchronous throw, from an interceptor or the handler, becomes a rejection.
    try {
      return Promise.resolve(interceptor === undefined ? last(c) : interceptor(c, (next) => step(i + 1, next)));
    } catch (e) {
      return Promise.reject(e);
    }
  };
  return step(0, call);
}
