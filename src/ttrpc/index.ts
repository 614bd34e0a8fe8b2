// Public API of the ttrpc package. Everything else in this folder is internal.
export { Client, type ConnectOptions } from "./client.ts";
export { Code, codeName, type StatusDetail, TtrpcError } from "./errors.ts";
export { MAX_PAYLOAD } from "./frame.ts";
export type { Metadata, MetadataInit } from "./metadata.ts";
export { type AcceptedConnection, type Handshaker, type ListenTarget, Server, type ServerOptions } from "./server.ts";
export type {
  CallContext,
  CallInfo,
  CallOptions,
  ClientCall,
  ClientInterceptor,
  ClientMethod,
  MessageType,
  MethodDefinition,
  MethodHandler,
  ServerCall,
  ServerInterceptor,
  ServiceClient,
  ServiceDefinition,
  ServiceImplementation,
} from "./service.ts";
export { bindUnixSocket, closeFd, type PeerCredentials, peerCredentials, requireCredentials, requireSameUser } from "./unix.ts";
