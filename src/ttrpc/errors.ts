// Errors travel as google.rpc.Status: a gRPC code and a message. TtrpcError is the
// one error type callers see, on both sides of the wire.

/** gRPC status codes (google.rpc.Code), as ttrpc uses them. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type Code = (typeof Code)[keyof typeof Code];

const codeNames = new Map<number, string>(Object.entries(Code).map(([name, code]) => [code, name]));

export function codeName(code: number): string {
  return codeNames.get(code) ?? `CODE_${code}`;
}

/** An encoded google.protobuf.Any carried in Status.details. */
export interface StatusDetail {
  typeUrl: string;
  value: Uint8Array;
}

export class TtrpcError extends Error {
  override readonly name = "TtrpcError";

  constructor(
    readonly code: number,
    message: string,
    readonly details: StatusDetail[] = [],
  ) {
    super(message);
  }

  override toString(): string {
    return `ttrpc: ${codeName(this.code)}: ${this.message}`;
  }
}

/** The status a handler's failure is reported with: TtrpcErrors keep theirs, anything else is UNKNOWN. */
export function toStatus(err: unknown): { code: number; message: string; details: StatusDetail[] } {
  if (err instanceof TtrpcError) return { code: err.code, message: err.message, details: err.details };
  if (err instanceof Error) return { code: Code.UNKNOWN, message: err.message, details: [] };
  return { code: Code.UNKNOWN, message: String(err), details: [] };
}

/** The connection is gone: every call still waiting on it fails with this. */
export function connectionClosed(reason?: string): TtrpcError {
  return new TtrpcError(Code.UNAVAILABLE, reason ? `ttrpc: connection closed: ${reason}` : "ttrpc: connection closed");
}

export function oversize(length: number, max: number): TtrpcError {
  return new TtrpcError(Code.RESOURCE_EXHAUSTED, `message length ${length} exceed maximum message size of ${max}`);
}
