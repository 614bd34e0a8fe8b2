// Public API of the ttrpc package. Everything else in this folder is internal.
export { Client, type ConnectOptions } from "./client.ts";
export { Code, codeName, type StatusDetail, TtrpcError } from "./errors.ts";
export { MAX_PAYLOAD } from "./frame.ts";
export type { Metadata, MetadataInit } from "./metadata.ts";
export { Server, type ServerOptions } from "./server.ts";
export type {
  CallContext,
  CallOptions,
  ClientMethod,
  MessageType,
  MethodDefinition,
  MethodHandler,
  ServiceClient,
  ServiceDefinition,
  ServiceImplementation,
} from "./service.ts";
