// Traces: a span per task-API call and per Create step, sent over OTLP when the operator sets
// the standard OpenTelemetry variables (docs/running.md, "Traces"). This file is all a process
// loads while they are unset: a check of the environment and a pass-through `traced`. The
// exporter (./otlp-traces.ts) is imported only once tracing is on, so a server with tracing
// off carries none of it (the idle memory of a pod is the figure that matters).

export type AttributeValue = string | number | boolean;
export type Attributes = Record<string, AttributeValue>;

/** What code inside a span may tell it: attributes learnt on the way, a better name. */
export interface SpanHandle {
  set(key: string, value: AttributeValue): void;
  setName(name: string): void;
}

export interface SpanOptions {
  attributes?: Attributes;
  /** A call served to a client (the span kind a collector shows as SERVER); default internal. */
  server?: boolean;
  /**
   * The caller's W3C trace context (`traceparent`, `tracestate` as sent in request metadata):
   * the span's parent. Without it a server span starts a trace, any other span is a child of
   * the span the code runs in, if any.
   */
  traceparent?: string;
  tracestate?: string;
}

export interface Tracer {
  /** Runs `fn` as a span; what `fn` starts (awaited or not) runs inside it. Returns fn's result. */
  run<T>(name: string, fn: (span: SpanHandle) => T, o?: SpanOptions): T;
  /** Sends what is queued; settles within `timeoutMs` whatever the collector does. */
  flush(timeoutMs: number): Promise<void>;
}

const NO_SPAN: SpanHandle = { set() {}, setName() {} };
let tracer: Tracer | null = null;

/** Runs `fn` as a span named `name` when tracing is on; else just runs it. */
export function traced<T>(name: string, fn: (span: SpanHandle) => T, o?: SpanOptions): T {
  return tracer === null ? fn(NO_SPAN) : tracer.run(name, fn, o);
}

export function tracingOn(): boolean {
  return tracer !== null;
}

/**
 * Whether the environment asks for traces: an OTLP endpoint is set and the SDK not disabled,
 * the rules containerd 2.x applies to its own (so one setting turns both on).
 */
export function tracingWanted(env: Record<string, string | undefined>): boolean {
  if (/^true$/i.test(env.OTEL_SDK_DISABLED ?? "")) return false;
  const exporter = env.OTEL_TRACES_EXPORTER;
  if (exporter !== undefined && exporter !== "" && exporter !== "otlp") return false;
  return Boolean(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT);
}

/**
 * Turns tracing on for this process if the environment asks for it (else loads nothing).
 * `service` is the default service.name (OTEL_SERVICE_NAME wins). A setting it cannot honour
 * is logged and leaves tracing off: a shim never fails to serve over its traces.
 */
export async function startTracing(
  env: Record<string, string | undefined>,
  service: string,
  log: (m: string, level: "warning" | "debug") => void,
): Promise<void> {
  if (tracer !== null || !tracingWanted(env)) return;
  try {
    const { otlpTracer } = await import("./otlp-traces.ts");
    tracer = await otlpTracer(env, service, log);
  } catch (e) {
    log(`traces: off: ${e instanceof Error ? e.message : String(e)}`, "warning");
  }
}

/** Sends the spans still queued (before the process exits); at once when tracing is off. */
export function flushTraces(timeoutMs = 1000): Promise<void> {
  return tracer === null ? Promise.resolve() : tracer.flush(timeoutMs);
}

/** Sends what is queued and turns tracing off (servers made from now on add no spans). */
export async function stopTracing(timeoutMs = 1000): Promise<void> {
  const t = tracer;
  tracer = null;
  await t?.flush(timeoutMs);
}
