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
