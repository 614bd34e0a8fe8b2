// The tracer behind ./trace.ts once the OpenTelemetry variables turn tracing on: spans kept in
// a bounded queue and sent in batches as OTLP/HTTP JSON (the collector's /v1/traces), off the
// request path. A collector that is down or slow costs a dropped batch and a warning (at most
// one a minute), never a task call: nothing here is awaited by the code being traced.
//
// Settings read (the OpenTelemetry SDK's names and defaults): OTEL_EXPORTER_OTLP_ENDPOINT (then
// /v1/traces under it) or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as is); their _HEADERS;
// OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: http/json or http/protobuf (both sent as JSON, which
// every OTLP/HTTP receiver takes), grpc refused; OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES;
// OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
// OTEL_BSP_EXPORT_TIMEOUT.

import type { Attributes, AttributeValue, SpanHandle, SpanOptions, Tracer } from "./trace.ts";

type Env = Record<string, string | undefined>;
type Log = (m: string, level: "warning" | "debug") => void;

interface Context {
  traceId: string;
  spanId: string;
  /** The W3C tracestate the trace came with (empty when none): every span of ours in it keeps it. */
  traceState: string;
}

interface Span extends Context, SpanHandle {
  parentSpanId: string;
  name: string;
  server: boolean;
  start: number;
  end: number;
  attributes: Attributes;
  error: string | null;
}

/** OTLP span kinds and status codes (opentelemetry/proto/trace/v1/trace.proto). */
const KIND_INTERNAL = 1;
const KIND_SERVER = 2;
const STATUS_OK = 1;
const STATUS_ERROR = 2;
const WARN_EVERY_MS = 60_000;
const CONTAINERD_SERVICE = "containerd";

export interface OtlpSettings {
  url: string;
  headers: Record<string, string>;
  resource: Attributes;
  delayMs: number;
  maxQueue: number;
  maxBatch: number;
  timeoutMs: number;
}

/** The exporter's settings from the environment; throws on one it cannot honour. */
export function otlpSettings(env: Env, service: string): OtlpSettings {
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL || env.OTEL_EXPORTER_OTLP_PROTOCOL || "http/protobuf";
  if (protocol !== "http/protobuf" && protocol !== "http/json")
    throw new Error(`OTLP protocol ${protocol} is not supported (http/json or http/protobuf; sent as JSON)`);
  const traces = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const url = traces ? traces : `${(base ?? "").replace(/\/+$/, "")}/v1/traces`;
  if (!/^https?:\/\//.test(url)) throw new Error(`OTLP endpoint ${url} is not an http(s) URL`);
  const resource: Attributes = { ...keyValues(env.OTEL_RESOURCE_ATTRIBUTES), "service.name": service };
  // containerd 2.x puts OTEL_SERVICE_NAME=containerd in its own environment when it is unset,
  // and its shims inherit it: that name is containerd's, not an operator's choice for us.
  if (env.OTEL_SERVICE_NAME && env.OTEL_SERVICE_NAME !== CONTAINERD_SERVICE) resource["service.name"] = env.OTEL_SERVICE_NAME;
  return {
    url,
    headers: {
      ...keyValues(env.OTEL_EXPORTER_OTLP_HEADERS),
      ...keyValues(env.OTEL_EXPORTER_OTLP_TRACES_HEADERS),
      "content-type": "application/json",
    },
    resource,
    delayMs: positive(env.OTEL_BSP_SCHEDULE_DELAY, 5000),
    maxQueue: positive(env.OTEL_BSP_MAX_QUEUE_SIZE, 2048),
    maxBatch: positive(env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 512),
    timeoutMs: positive(env.OTEL_BSP_EXPORT_TIMEOUT, 10_000),
  };
}

export async function otlpTracer(env: Env, service: string, log: Log): Promise<Tracer> {
  const s = otlpSettings(env, service);
  // Imported here, not at the top: a bundler hoists a static import of a built-in module out of
  // a module it inlines, and a server with tracing off would load node:async_hooks at start.
  const { AsyncLocalStorage } = await import("node:async_hooks");
  const current = new AsyncLocalStorage<Context>();
  const queue: Span[] = [];
  let dropped = 0;
  let sending: Promise<void> | null = null;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let lastWarning = -Infinity;
  const warn = (m: string) => {
    const now = Date.now();
    if (now - lastWarning < WARN_EVERY_MS) return;
    lastWarning = now;
    log(`traces: ${m}`, "warning");
  };

  const send = async (batch: Span[]): Promise<void> => {
    try {
      const res = await fetch(s.url, {
        method: "POST",
        headers: s.headers,
        body: JSON.stringify(encode(batch, s.resource)),
        signal: AbortSignal.timeout(s.timeoutMs),
      });
      if (!res.ok) warn(`${s.url} answered ${res.status} ${res.statusText}: ${batch.length} spans dropped`);
      await res.arrayBuffer().catch(() => {});
    } catch (e) {
      warn(`${s.url}: ${e instanceof Error ? e.message : String(e)}: ${batch.length} spans dropped`);
    }
  };
  /** Sends what is queued, one request at a time. */
  const drain = (): Promise<void> => {
    sending ??= (async () => {
      while (queue.length > 0) await send(queue.splice(0, s.maxBatch));
      if (dropped > 0) {
        warn(`queue full (${s.maxQueue}): ${dropped} spans dropped`);
        dropped = 0;
      }
    })().finally(() => {
      sending = null;
    });
    return sending;
  };
  const enqueue = (span: Span) => {
    if (queue.length >= s.maxQueue) {
      dropped++;
      return;
    }
    queue.push(span);
    if (queue.length >= s.maxBatch) void drain();
    else if (timer === null) {
      // Unref'd: a queue of spans never keeps a process alive (flush() sends them at exit).
      timer = setTimeout(() => {
        timer = null;
        void drain();
      }, s.delayMs);
      timer.unref();
    }
  };

  return {
    run<T>(name: string, fn: (span: SpanHandle) => T, o: SpanOptions = {}): T {
      // A call's parent is its caller's span or none: whatever context the server's socket
      // handlers were set up in (a sandbox's server is made inside a manager call) is not it.
      const sent = o.traceparent !== undefined ? parseTraceparent(o.traceparent) : undefined;
      const parent = sent !== undefined || o.server ? sent : current.getStore();
      // A caller that traces but did not sample this trace: neither do we (parent-based sampling).
      if (parent === null) return fn({ set() {}, setName() {} });
      const span: Span = {
        traceId: parent?.traceId ?? randomHex(16),
        spanId: randomHex(8),
        parentSpanId: parent?.spanId ?? "",
        traceState: sent ? (o.tracestate ?? "") : (parent?.traceState ?? ""),
        name,
        server: o.server ?? false,
        start: now(),
        end: 0,
        attributes: { ...o.attributes },
        error: null,
        set(key, value) {
          span.attributes[key] = value;
        },
        setName(n) {
          span.name = n;
        },
      };
      const done = (error: unknown) => {
        span.end = now();
        if (error !== undefined) span.error = error instanceof Error ? error.message : String(error);
        enqueue(span);
      };
      let out: T;
      try {
        out = current.run({ traceId: span.traceId, spanId: span.spanId, traceState: span.traceState }, fn, span);
      } catch (e) {
        done(e ?? "thrown");
        throw e;
      }
      if (out instanceof Promise)
        out.then(
          () => done(undefined),
          (e) => done(e ?? "rejected"),
        );
      else done(undefined);
      return out;
    },
    async flush(timeoutMs: number): Promise<void> {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      const flushed = (async () => {
        await sending;
        await drain();
      })();
      let expire: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([flushed, new Promise<void>((r) => (expire = setTimeout(r, timeoutMs)))]);
      clearTimeout(expire);
    },
  };
}

/**
 * A W3C traceparent (version 00: `00-<trace id>-<parent id>-<flags>`): the parent's context,
 * null when the caller did not sample it, undefined when the value is not one (ignored).
 */
export function parseTraceparent(v: string): Context | null | undefined {
  const m = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(v.trim());
  if (!m || m[1] === "ff" || /^0+$/.test(m[2] ?? "") || /^0+$/.test(m[3] ?? "")) return undefined;
  if ((Number.parseInt(m[4] ?? "0", 16) & 1) === 0) return null;
  return { traceId: m[2] as string, spanId: m[3] as string, traceState: "" };
}

/** The OTLP/JSON body of a batch: one resource, one scope. Ids in hex, times in ns as strings. */
export function encode(batch: readonly Span[], resource: Attributes): unknown {
  return {
    resourceSpans: [
      {
        resource: { attributes: keyValueList(resource) },
        scopeSpans: [
          {
            scope: { name: "bunwasi" },
            spans: batch.map((sp) => ({
              traceId: sp.traceId,
              spanId: sp.spanId,
              ...(sp.parentSpanId ? { parentSpanId: sp.parentSpanId } : {}),
              ...(sp.traceState ? { traceState: sp.traceState } : {}),
              name: sp.name,
              kind: sp.server ? KIND_SERVER : KIND_INTERNAL,
              startTimeUnixNano: nanos(sp.start),
              endTimeUnixNano: nanos(sp.end),
              attributes: keyValueList(sp.attributes),
              status: sp.error === null ? { code: STATUS_OK } : { code: STATUS_ERROR, message: sp.error },
            })),
          },
        ],
      },
    ],
  };
}

function keyValueList(a: Attributes): unknown[] {
  return Object.entries(a).map(([key, v]) => ({ key, value: anyValue(v) }));
}

function anyValue(v: AttributeValue): unknown {
  if (typeof v === "boolean") return { boolValue: v };
  if (typeof v === "number") return Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v };
  return { stringValue: v };
}

/** Epoch milliseconds, sub-millisecond precise (performance.now on the process's time origin). */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/** Epoch ms as the decimal string of epoch ns (a double cannot hold ns since 1970 exactly). */
function nanos(ms: number): string {
  const whole = Math.floor(ms);
  return (BigInt(whole) * 1_000_000n + BigInt(Math.round((ms - whole) * 1e6))).toString();
}

function randomHex(bytes: number): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  return Buffer.from(b).toString("hex");
}

/** `k1=v1,k2=v2` with percent-encoded values (the OTEL_*_HEADERS and OTEL_RESOURCE_ATTRIBUTES form). */
function keyValues(v: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (v ?? "").split(",")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    try {
      out[decodeURIComponent(part.slice(0, eq).trim())] = decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      // A malformed pair is skipped, as the SDKs do.
    }
  }
  return out;
}

function positive(v: string | undefined, fallback: number): number {
  const n = Number(v);
  return v !== undefined && v !== "" && Number.isFinite(n) && n > 0 ? n : fallback;
}
