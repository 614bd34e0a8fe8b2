// Traces (issue 19, item 1), end to end: a real OpenTelemetry Collector (the OTLP receiver and
// the file exporter, built by scripts/otel-collector.sh) on 127.0.0.1, containerd and the
// shared-mode daemon with OTEL_EXPORTER_OTLP_ENDPOINT pointing at it, one `ctr run` per
// containerd and mode. The collector's file must then hold our spans of that run: a server span
// for each task call (Create, Start, Wait, Delete) and, under Create, one per step (mount rootfs,
// plan, compile or compile cache hit, runtime create), each step's parent chain ending at the
// Create span. containerd 1.6 sends no trace context to shims (its Create is our trace's root);
// containerd 2.x traces when the same variables are set, and its ttrpc client span of the call
// is then our Create span's parent. Shared mode: the daemon's span of the manager call the thin
// shim makes at start (CreateSandbox) too. And with the collector down, a run is unchanged and
// the shim's warning is in containerd's log.
// Needs root, containerd, runc, the pinned 2.x (scripts/containerd-versions.sh) and the collector.
// The trace of each run is printed (names, durations, parents); nothing asserts on timing.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pinned2x } from "../support/containerd-versions.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "../support/daemon.ts";
import { IMAGES, REPO, RUNTIME, type ShimEnv, shimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const COLLECTOR = join(REPO, "build/otelcol/v0.165.0/otelcol");
const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc, the collector (scripts/otel-collector.sh)", () => {
  expect(canRun).toBe(true);
  expect(`${COLLECTOR}: ${existsSync(COLLECTOR)}`).toBe(`${COLLECTOR}: true`);
});

const V2 = pinned2x();
const CONTAINERDS = [
  { containerd: "1.6", binary: "/usr/bin/containerd", traces: false },
  { containerd: V2, binary: join(REPO, "build/containerd", V2, "bin/containerd"), traces: true },
];
const MODES = [
  { mode: "normal", runtime: RUNTIME, service: "containerd-shim-wasmtime-v1" },
  { mode: "shared", runtime: SHARED_RUNTIME, service: "containerd-wasmtimed" },
] as const;

interface Span {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: { key: string; value: { stringValue?: string } }[];
  status?: { code?: number; message?: string };
}

const attr = (s: Span, key: string) => s.attributes?.find((a) => a.key === key)?.value.stringValue;
const ms = (s: Span) => Number(BigInt(s.endTimeUnixNano) - BigInt(s.startTimeUnixNano)) / 1e6;

let dir: string;
let collector: Bun.Subprocess;
let endpoint: string;
let output: string;
let daemon: Daemon;

/** Every span the collector has written so far, with its resource's service.name. */
function spans(): Span[] {
  if (!existsSync(output)) return [];
  const out: Span[] = [];
  // Whole lines only: the collector may be writing the last one now.
  const text = readFileSync(output, "utf8");
  for (const line of text.slice(0, text.lastIndexOf("\n") + 1).split("\n")) {
    if (!line.trim()) continue;
    const body = JSON.parse(line) as {
      resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: Span[] }[] }[];
    };
    for (const rs of body.resourceSpans) {
      const service = rs.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue ?? "";
      for (const ss of rs.scopeSpans) for (const s of ss.spans ?? []) out.push({ ...s, service });
    }
  }
  return out;
}

/** A port free now on 127.0.0.1 (the OS picks it). */
function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

beforeAll(async () => {
  dir = mkdtempSync("/tmp/bwtr-");
  output = join(dir, "traces.jsonl");
  const port = freePort();
  endpoint = `http://127.0.0.1:${port}`;
  const config = join(dir, "collector.yaml");
  // Only the OTLP/HTTP receiver listens (its own metrics are off: no fixed port to collide on).
  writeFileSync(
    config,
    [
      "receivers:",
      "  otlp:",
      "    protocols:",
      "      http:",
      `        endpoint: 127.0.0.1:${port}`,
      "exporters:",
      "  file:",
      `    path: ${output}`,
      "    flush_interval: 100ms",
      "service:",
      "  telemetry:",
      "    logs:",
      "      level: warn",
      "    metrics:",
      "      level: none",
      "  pipelines:",
      "    traces:",
      "      receivers: [otlp]",
      "      exporters: [file]",
      "",
    ].join("\n"),
  );
  collector = Bun.spawn([COLLECTOR, "--config", `file:${config}`], { stdout: "ignore", stderr: Bun.file(join(dir, "collector.log")) });
  await until(
    "the collector to listen",
    async () =>
      (
        await fetch(`${endpoint}/v1/traces`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }).catch(
          () => null,
        )
      )?.ok,
    30_000,
    50,
  );
  mkdirSync(join(dir, "d"));
  daemon = await startDaemon(join(dir, "d"), otelEnv());
}, 120_000);

afterAll(async () => {
  await daemon?.stop("SIGTERM");
  collector?.kill("SIGTERM");
  await collector?.exited;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The standard settings an operator gives containerd (whose shims inherit them) and the daemon. */
function otelEnv(): Record<string, string> {
  // A short batch delay: spans arrive soon after the run (the test polls; no bound on when).
  return { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: "100" };
}

/** The spans under `root` as an indented list: name, service, duration. */
function tree(all: Span[], root: Span, depth = 0): string[] {
  const line = `${"  ".repeat(depth)}${root.name} [${root.service}] ${ms(root).toFixed(1)} ms`;
  const children = all
    .filter((s) => s.parentSpanId === root.spanId && s.traceId === root.traceId)
    .sort((a, b) => Number(BigInt(a.startTimeUnixNano) - BigInt(b.startTimeUnixNano)));
  return [line, ...children.flatMap((c) => tree(all, c, depth + 1))];
}

for (const c of CONTAINERDS)
  for (const m of MODES)
    describe(`traces of a ctr run, ${m.mode} mode, containerd ${c.containerd}`, () => {
      let env: ShimEnv;
      const id = `tr-${m.mode}-${c.containerd.replace(/\W/g, "")}-${process.pid}`;

      beforeAll(async () => {
        env = await shimEnv({
          binary: c.binary,
          env: { ...daemon.env, ...otelEnv() },
          dir: join(dir, `c-${m.mode}-${c.traces ? 2 : 1}`),
          // The private config disables containerd's tracing plugins; 2.x's read the OTEL_* variables.
          enablePlugins: ["io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"],
        });
      }, 300_000);
      afterAll(async () => {
        await env?.stop();
      });

      test("our spans, the Create steps under Create, containerd's span as parent where it traces", async () => {
        const r = await env.run(IMAGES.demo, id, ["/wasi-demo-app.wasm", "echo", "traced"], { runtime: m.runtime });
        expect(r.code).toBe(0);
        expect(r.stdout).toContain("traced");
        const ours = (s: Span) => s.service === m.service && attr(s, "container.id") === id;
        const call = (all: Span[], method: string) =>
          all.find((s) => ours(s) && new RegExp(`^containerd\\.task\\.v[23]\\.Task/${method}$`).test(s.name));
        // Delete's span ends before the server's exit flush: all four are sent by then; where
        // containerd traces, its span of the Create comes in a batch of its own.
        const all = await until(
          "the run's task-call spans in the collector's file",
          () => {
            const a = spans();
            if (!["Create", "Start", "Wait", "Delete"].every((x) => call(a, x))) return null;
            const create = call(a, "Create") as Span;
            if (c.traces && !a.some((s) => s.spanId === create.parentSpanId)) return null;
            return a;
          },
          60_000,
          100,
        );
        const create = call(all, "Create") as Span;
        for (const x of ["Create", "Start", "Wait", "Delete"]) {
          const s = call(all, x) as Span;
          expect(s.kind).toBe(2); // SERVER
          expect(s.status?.code).toBe(1); // OK
          expect(attr(s, "rpc.system")).toBe("ttrpc");
          expect(attr(s, "containerd.namespace")).toBe(env.cd.namespace);
        }
        // Each Create step: in Create's trace, its parent chain reaches the Create span.
        const byId = new Map(all.filter((s) => s.traceId === create.traceId).map((s) => [s.spanId, s]));
        const underCreate = (s: Span) => {
          for (let p = s.parentSpanId; p; p = byId.get(p)?.parentSpanId) if (p === create.spanId) return true;
          return false;
        };
        const steps = [...byId.values()].filter(underCreate);
        const names = steps.map((s) => s.name);
        for (const step of ["mount rootfs", "plan", "runtime create"]) expect(names).toContain(step);
        expect(names.some((n) => n === "compile" || n === "compile cache hit")).toBe(true);
        for (const s of steps) {
          expect(s.service).toBe(m.service);
          expect(s.kind).toBe(1); // INTERNAL
          expect(s.status?.code).toBe(1);
        }
        expect(
          steps.find((s) => s.name === "runtime create")?.attributes?.find((a) => a.key === "bunwasi.runtime")?.value.stringValue,
        ).toBe(m.mode === "normal" ? "runc" : "in-process");
        if (c.traces) {
          // containerd's ttrpc client span of this Create is our Create's parent, in its trace.
          const parent = all.find((s) => s.spanId === create.parentSpanId && s.traceId === create.traceId);
          expect(parent?.service).toBe("containerd");
          expect(parent?.name).toMatch(/Task\/Create$/);
        } else {
          // containerd 1.6 sends no trace context: our Create starts the trace.
          expect(create.parentSpanId ?? "").toBe("");
        }
        if (m.mode === "shared") {
          const sandbox = all.find(
            (s) =>
              s.service === m.service && s.name === "bunwasi.manager.v1.Manager/CreateSandbox" && attr(s, "containerd.sandbox.id") === id,
          );
          expect(sandbox?.status?.code).toBe(1);
        }
        // The trace of this run, for the reader (containerd's root span when it traces).
        let root = create;
        for (let p = byId.get(root.parentSpanId ?? ""); p; p = byId.get(p.parentSpanId ?? "")) root = p;
        console.log(`trace of ctr run (${m.mode} mode, containerd ${c.containerd}):\n${tree(all, root).join("\n")}`);
        for (const x of ["Start", "Wait", "Delete"]) {
          const s = call(all, x) as Span;
          console.log(
            `other call: ${s.name} [${s.service}] ${ms(s).toFixed(1)} ms, parent ${s.parentSpanId ? "containerd's span" : "none"}`,
          );
        }
      }, 180_000);
    });

describe("a collector that is down, normal mode, containerd 1.6", () => {
  let env: ShimEnv;
  let dead: string;
  beforeAll(async () => {
    dead = `http://127.0.0.1:${freePort()}`;
    env = await shimEnv({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: dead, OTEL_BSP_SCHEDULE_DELAY: "100" }, dir: join(dir, "c-down") });
  }, 300_000);
  afterAll(async () => {
    await env?.stop();
  });

  test("the run is unchanged; the shim says in containerd's log that it dropped spans", async () => {
    const id = `tr-down-${process.pid}`;
    const r = await env.run(IMAGES.demo, id, ["/wasi-demo-app.wasm", "echo", "traced"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("traced");
    const line = await until(
      "the shim's warning in containerd's log",
      () =>
        readFileSync(env.cd.logPath, "utf8")
          .split("\n")
          .find((l) => l.includes(`traces: ${dead}/v1/traces`) && l.includes("spans dropped")),
      60_000,
      100,
    );
    expect(line).toContain("warn");
  }, 180_000);
});
