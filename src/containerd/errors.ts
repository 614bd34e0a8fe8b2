// gRPC's status codes and the error a failed call throws. Apart from the client so that
// code branching on them (src/oci/artifact.ts) does not load node:http2 until it calls.

/** gRPC status codes (google.rpc.Code) that callers branch on. */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

const CODE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(GrpcCode).map(([k, v]) => [v, k]));

export class GrpcError extends Error {
  override name = "GrpcError";
  constructor(
    readonly code: number,
    readonly details: string,
    readonly method: string,
  ) {
    super(`${method}: ${CODE_NAMES[code] ?? `code ${code}`}: ${details}`);
  }
}
