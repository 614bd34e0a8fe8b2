// The daemon's metrics endpoint (--metrics-address): GET /metrics answers Prometheus text
// (./exposition.ts) of the figures ./metrics.ts reads, on a unix socket or a loopback TCP
// address (./metrics-address.ts says why no other). Bun.serve on the daemon's event loop: no
// thread of its own, and the daemon keeps Bun's thread pool anyway (docs/ARCHITECTURE.md,
// "Bun's thread pool"). The daemon loads this file by path (./scripts.ts) and only with the
// flag, so a daemon without it carries none of it in memory.

import { chmodSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import { EXPOSITION_CONTENT_TYPE, exposition } from "./exposition.ts";
import { DaemonMetrics, type MetricsSource } from "./metrics.ts";
import { type MetricsAddress, metricsAddressText } from "./metrics-address.ts";

export { DaemonMetrics };

export interface MetricsEndpoint {
  /** Where it listens (a TCP port 0 given is the port the kernel chose). */
  readonly address: string;
  close(): Promise<void>;
}

/** Serves `metrics` of `source` at `address`; rejects with a clear message when it cannot listen there. */
export async function serveMetrics(address: MetricsAddress, metrics: DaemonMetrics, source: MetricsSource): Promise<MetricsEndpoint> {
  const fetch = async (req: Request): Promise<Response> => {
    const path = new URL(req.url).pathname;
    if (path !== "/metrics") return new Response("not found: the metrics are at /metrics\n", { status: 404 });
    if (req.method !== "GET" && req.method !== "HEAD")
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    try {
      const text = exposition(await metrics.families(source));
      return new Response(req.method === "HEAD" ? null : text, { headers: { "content-type": EXPOSITION_CONTENT_TYPE } });
    } catch (e) {
      return new Response(`cannot read the metrics: ${e instanceof Error ? e.message : String(e)}\n`, { status: 500 });
    }
  };
  const text = metricsAddressText(address);
  let server: ReturnType<typeof Bun.serve>;
  try {
    if (address.kind === "unix") {
      await clearStaleSocket(address.path);
      mkdirSync(dirname(address.path), { recursive: true, mode: 0o755 });
      server = Bun.serve({ unix: address.path, fetch, development: false });
      // Root's, as the manager socket (the figures name every pod's containers).
      chmodSync(address.path, 0o600);
    } else server = Bun.serve({ hostname: address.hostname, port: address.port, fetch, development: false });
  } catch (e) {
    throw new Error(`cannot serve metrics on ${text}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const served: MetricsAddress = address.kind === "tcp" ? { ...address, port: server.port ?? address.port } : address;
  return {
    address: metricsAddressText(served),
    close: async () => {
      await server.stop(true);
      if (address.kind === "unix") {
        try {
          unlinkSync(address.path);
        } catch {}
      }
    },
  };
}

/**
 * A socket file left by a daemon that was killed is removed; a live one (another daemon's
 * metrics) or a file that is not a socket is an error: neither is ours to take.
 */
async function clearStaleSocket(path: string): Promise<void> {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket`);
  const live = await Bun.connect({ unix: path, socket: { data() {} } }).then(
    (s) => {
      s.end();
      return true;
    },
    () => false,
  );
  if (live) throw new Error(`${path} is in use (another daemon's metrics?)`);
  unlinkSync(path);
}
