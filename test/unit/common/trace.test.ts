// Traces (src/common/trace.ts, src/common/otlp-traces.ts) against a stand-in collector (a Bun
// HTTP server keeping what it is sent): when the environment turns tracing on, the OTLP/JSON a
// batch becomes, parents (the caller's traceparent, else the span the code runs in, also
// across interleaved calls), an unsampled caller, errors, a collector that is down, and the
// span a ttrpc server interceptor makes from the metadata key containerd sends.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { encode, otlpSettings, otlpTracer, parseTraceparent } from "../../../src/common/otlp-traces.ts";
import { flushTraces, startTracing, stopTracing, traced, tracingOn, tracingWanted } from "../../../src/common/trace.ts";
import { spanPerCall } from "../../../src/runtime-v2/task-server.ts";
import { Client, Server } from "../../../src/ttrpc/index.ts";
import { EchoDefinition, EchoRequest } from "../../interop/gen/echo.ts";
import { echoService } from "../../support/echo-service.ts";
import { tempDir } from "../../support/tmp.ts";

interface OtlpSpan {
  traceId: string;
  traceState?: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: Record<string, unknown> }[];
  status: { code: number; message?: string };
}

/** A collector stand-in: every body posted to /v1/traces, and the spans in them. */
function collector() {
  const bodies: { resourceSpans: { resource: { attributes: unknown[] }; scopeSpans: { spans: OtlpSpan[] }[] }[] }[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(req) {
      if (new URL(req.url).pathname !== "/v1/traces" || req.headers.get("content-type") !== "application/json")
        return new Response("no", { status: 404 });
      bodies.push((await req.json()) as (typeof bodies)[number]);
      return Response.json({});
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    bodies,
    spans: () => bodies.flatMap((b) => b.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans))),
    stop: () => server.stop(true),
  };
}

const attr = (s: OtlpSpan, key: string) => s.attributes.find((a) => a.key === key)?.value;
const PARENT = "0af7651916cd43dd8448eb211c80319c";
const PARENT_SPAN = "b7ad6b7169203331";

describe("when tracing is on", () => {
  test("the standard variables decide, as containerd 2.x reads them", () => {
    expect(tracingWanted({})).toBe(false);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318" })).toBe(true);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://x:4318/v1/traces" })).toBe(true);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318", OTEL_SDK_DISABLED: "true" })).toBe(false);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318", OTEL_TRACES_EXPORTER: "none" })).toBe(false);
  });

  test("endpoint, headers, service name and resource from the environment", () => {
    const s = otlpSettings(
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/",
        OTEL_EXPORTER_OTLP_HEADERS: "a=1,b=x%20y",
        OTEL_RESOURCE_ATTRIBUTES: "host.name=n1,service.name=ignored",
      },
      "containerd-shim-wasmtime-v1",
    );
    expect(s.url).toBe("http://c:4318/v1/traces");
    expect(s.headers).toEqual({ a: "1", b: "x y", "content-type": "application/json" });
    expect(s.resource).toEqual({ "host.name": "n1", "service.name": "containerd-shim-wasmtime-v1" });
    const t = otlpSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://c/t", OTEL_SERVICE_NAME: "mine" }, "d");
    expect(t.url).toBe("http://c/t");
    expect(t.resource["service.name"]).toBe("mine");
    // What containerd 2.x leaves in its shims' environment names containerd, not us.
    expect(otlpSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c", OTEL_SERVICE_NAME: "containerd" }, "d").resource["service.name"]).toBe(
      "d",
    );
    expect(() => otlpSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }, "d")).toThrow(
      /grpc is not supported/,
    );
  });

  test("off: tracing stays off and traced only runs the function", async () => {
    await startTracing({}, "x", () => {});
    expect(tracingOn()).toBe(false);
    expect(
      traced("a", (s) => {
        s.set("k", 1);
        return 7;
      }),
    ).toBe(7);
    await flushTraces();
  });
});

describe("traceparent", () => {
  test("sampled, unsampled, malformed", () => {
    expect(parseTraceparent(`00-${PARENT}-${PARENT_SPAN}-01`)).toEqual({ traceId: PARENT, spanId: PARENT_SPAN, traceState: "" });
    expect(parseTraceparent(`00-${PARENT}-${PARENT_SPAN}-00`)).toBeNull();
    expect(parseTraceparent("00-xyz")).toBeUndefined();
    expect(parseTraceparent(`00-${"0".repeat(32)}-${PARENT_SPAN}-01`)).toBeUndefined();
    expect(parseTraceparent(`ff-${PARENT}-${PARENT_SPAN}-01`)).toBeUndefined();
  });
});

describe("the exporter", () => {
  const c = collector();
  afterAll(() => c.stop());
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: c.url, OTEL_BSP_SCHEDULE_DELAY: "60000" };
  afterEach(() => void c.bodies.splice(0));

  test("nested spans, parents from the caller's traceparent then from the span they run in", async () => {
    const t = await otlpTracer(env, "svc", () => {});
    const out = await t.run(
      "call",
      async () => {
        await t.run("step one", async (s) => {
          await Bun.sleep(1);
          s.set("n", 2);
          s.setName("step 1");
        });
        return t.run("step two", () => "done");
      },
      { server: true, traceparent: `00-${PARENT}-${PARENT_SPAN}-01`, tracestate: "vendor=x", attributes: { "container.id": "c1" } },
    );
    expect(out).toBe("done");
    await t.flush(5000);
    expect(c.bodies.length).toBe(1);
    const resource = c.bodies[0]?.resourceSpans[0]?.resource.attributes;
    expect(resource).toEqual([{ key: "service.name", value: { stringValue: "svc" } }]);
    const spans = c.spans();
    const byName = new Map(spans.map((s) => [s.name, s]));
    const call = byName.get("call") as OtlpSpan;
    expect(call.traceId).toBe(PARENT);
    expect(call.parentSpanId).toBe(PARENT_SPAN);
    expect(call.kind).toBe(2);
    expect(call.traceState).toBe("vendor=x");
    expect(attr(call, "container.id")).toEqual({ stringValue: "c1" });
    for (const name of ["step 1", "step two"]) {
      const s = byName.get(name) as OtlpSpan;
      expect(s.traceId).toBe(PARENT);
      expect(s.parentSpanId).toBe(call.spanId);
      expect(s.kind).toBe(1);
      expect(s.status.code).toBe(1);
      expect(s.traceState).toBe("vendor=x");
    }
    expect(attr(byName.get("step 1") as OtlpSpan, "n")).toEqual({ intValue: "2" });
    for (const s of spans) expect(BigInt(s.endTimeUnixNano) >= BigInt(s.startTimeUnixNano)).toBe(true);
    expect(BigInt((byName.get("step 1") as OtlpSpan).startTimeUnixNano) >= BigInt(call.startTimeUnixNano)).toBe(true);
  });

  test("interleaved calls keep their own parents; a root call starts its own trace", async () => {
    const t = await otlpTracer(env, "svc", () => {});
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const a = t.run("a", async () => {
      await gate;
      await t.run("a.step", async () => {});
    });
    const b = t.run("b", async () => {
      release();
      await t.run("b.step", async () => {});
    });
    await Promise.all([a, b]);
    await t.flush(5000);
    const byName = new Map(c.spans().map((s) => [s.name, s]));
    const [sa, sb] = [byName.get("a") as OtlpSpan, byName.get("b") as OtlpSpan];
    expect(sa.parentSpanId).toBeUndefined();
    expect(sa.traceId).not.toBe(sb.traceId);
    expect(byName.get("a.step")?.parentSpanId).toBe(sa.spanId);
    expect(byName.get("b.step")?.parentSpanId).toBe(sb.spanId);
    expect(byName.get("b.step")?.traceId).toBe(sb.traceId);
  });

  test("a server span without a caller's context starts a trace, whatever span it runs in", async () => {
    const t = await otlpTracer(env, "svc", () => {});
    await t.run("outer", () => t.run("call", async () => {}, { server: true }));
    await t.flush(5000);
    const byName = new Map(c.spans().map((s) => [s.name, s]));
    expect(byName.get("call")?.parentSpanId).toBeUndefined();
    expect(byName.get("call")?.traceId).not.toBe(byName.get("outer")?.traceId);
  });

  test("a failure is the span's error status and still the caller's", async () => {
    const t = await otlpTracer(env, "svc", () => {});
    await expect(t.run("fails", async () => Promise.reject(new Error("no such container")))).rejects.toThrow("no such container");
    expect(() =>
      t.run("throws", () => {
        throw new Error("sync");
      }),
    ).toThrow("sync");
    await t.flush(5000);
    const byName = new Map(c.spans().map((s) => [s.name, s]));
    expect(byName.get("fails")?.status).toEqual({ code: 2, message: "no such container" });
    expect(byName.get("throws")?.status).toEqual({ code: 2, message: "sync" });
  });

  test("a caller that did not sample the trace: no span", async () => {
    const t = await otlpTracer(env, "svc", () => {});
    expect(t.run("unsampled", () => 1, { traceparent: `00-${PARENT}-${PARENT_SPAN}-00` })).toBe(1);
    await t.flush(5000);
    expect(c.spans()).toEqual([]);
  });

  test("a full batch is sent without waiting for the delay", async () => {
    const t = await otlpTracer({ ...env, OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "3" }, "svc", () => {});
    for (const n of [1, 2, 3]) t.run(`s${n}`, () => n);
    const until = async () => {
      while (c.spans().length < 3) await Bun.sleep(5);
    };
    await until();
    expect(c.spans().map((s) => s.name)).toEqual(["s1", "s2", "s3"]);
  });

  test("a collector that is down: calls go on, a warning, flush settles", async () => {
    const warnings: string[] = [];
    const down = Bun.serve({ port: 0, fetch: () => new Response("") });
    const url = `http://127.0.0.1:${down.port}`;
    down.stop(true);
    const t = await otlpTracer({ OTEL_EXPORTER_OTLP_ENDPOINT: url }, "svc", (m) => warnings.push(m));
    expect(await t.run("call", async () => 42)).toBe(42);
    await t.flush(5000);
    expect(warnings.length).toBe(1);
    expect(warnings[0]).toContain("1 spans dropped");
  });

  test("OTLP/JSON: ids in hex, times as ns strings, attribute kinds", () => {
    const body = encode(
      [
        {
          traceId: PARENT,
          spanId: PARENT_SPAN,
          parentSpanId: "",
          traceState: "",
          name: "x",
          server: false,
          start: 1_700_000_000_123.5,
          end: 1_700_000_000_124.25,
          attributes: { s: "v", i: 3, d: 0.5, b: true },
          error: null,
          set() {},
          setName() {},
        },
      ],
      { "service.name": "svc" },
    ) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
    const span = body.resourceSpans[0]?.scopeSpans[0]?.spans[0] as OtlpSpan;
    expect(span.startTimeUnixNano).toBe("1700000000123500000");
    expect(span.endTimeUnixNano).toBe("1700000000124250000");
    expect(span.parentSpanId).toBeUndefined();
    expect(span.attributes).toEqual([
      { key: "s", value: { stringValue: "v" } },
      { key: "i", value: { intValue: "3" } },
      { key: "d", value: { doubleValue: 0.5 } },
      { key: "b", value: { boolValue: true } },
    ]);
  });
});

describe("a ttrpc server's span per call", () => {
  const c = collector();
  const dir = tempDir();
  afterAll(async () => {
    await stopTracing();
    c.stop();
    dir.cleanup();
  });

  test("parented on the traceparent in the request metadata, named <service>/<method>", async () => {
    await startTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: c.url, OTEL_BSP_SCHEDULE_DELAY: "60000" }, "svc", () => {});
    expect(tracingOn()).toBe(true);
    const sock = join(dir.path, "s.sock");
    const server = new Server({ interceptors: [spanPerCall()] }).register(EchoDefinition, echoService);
    server.listen(sock);
    const client = await Client.connect(sock);
    try {
      const echo = client.service(EchoDefinition);
      // As containerd 2.x's otelttrpc client interceptor sends it, beside the namespace key.
      await echo.unary(EchoRequest.fromPartial({}), {
        metadata: { traceparent: `00-${PARENT}-${PARENT_SPAN}-01`, "containerd-namespace-ttrpc": "default" },
      });
      await echo.unary(EchoRequest.fromPartial({}));
    } finally {
      client.close();
      server.close();
    }
    await flushTraces(5000);
    const spans = c.spans();
    expect(spans.map((s) => s.name)).toEqual(["bunwasi.interop.v1.Echo/Unary", "bunwasi.interop.v1.Echo/Unary"]);
    const [first, second] = spans as [OtlpSpan, OtlpSpan];
    expect(first.traceId).toBe(PARENT);
    expect(first.parentSpanId).toBe(PARENT_SPAN);
    expect(first.kind).toBe(2);
    expect(attr(first, "containerd.namespace")).toEqual({ stringValue: "default" });
    expect(attr(first, "rpc.system")).toEqual({ stringValue: "ttrpc" });
    expect(second.parentSpanId).toBeUndefined();
    expect(second.traceId).not.toBe(PARENT);
  });
});
