// Where the daemon serves its metrics (--metrics-address): a unix socket or a loopback TCP
// address, nothing else. The daemon holds every wasm pod of the node: its figures name every
// pod's namespace and container ids and tell how busy each is, which is not for whoever can
// reach the node's network. A scraper on the node (or a proxy that authenticates, such as
// kube-rbac-proxy) reads them and passes them on. Read at argument time, so a bad address
// stops the daemon before it takes anything; the server itself is ./metrics-server.ts.

export type MetricsAddress = { kind: "unix"; path: string } | { kind: "tcp"; hostname: string; port: number };

/** The address an operator gave, or an error that says what is accepted and why. */
export function parseMetricsAddress(s: string): MetricsAddress {
  const accepted = "give unix:///path/to/metrics.sock, 127.0.0.1:PORT, [::1]:PORT or localhost:PORT";
  if (s.startsWith("unix://") || s.startsWith("/")) {
    const path = s.startsWith("unix://") ? s.slice("unix://".length) : s;
    if (!path.startsWith("/")) throw new Error(`--metrics-address ${JSON.stringify(s)}: a unix socket's path must be absolute`);
    return { kind: "unix", path };
  }
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(s);
  if (!m) throw new Error(`--metrics-address ${JSON.stringify(s)} is not an address: ${accepted}`);
  const host = (m[1] ?? m[2]) as string;
  const port = Number(m[3]);
  if (!Number.isInteger(port) || port > 65535) throw new Error(`--metrics-address ${JSON.stringify(s)}: port ${m[3]} is out of range`);
  const hostname = loopback(host);
  if (!hostname)
    throw new Error(
      `--metrics-address ${JSON.stringify(s)}: ${host} is not a loopback address. The daemon's metrics name every pod's ` +
        `containers on this node and are served without authentication, so they stay on the node: ${accepted} ` +
        "(a scraper on the node, or an authenticating proxy, passes them on)",
    );
  return { kind: "tcp", hostname, port };
}

/** The address to bind for a loopback host (a literal of 127.0.0.0/8, ::1, or localhost); undefined for any other. */
function loopback(host: string): string | undefined {
  if (host === "localhost") return "127.0.0.1";
  if (host === "::1" || host === "0:0:0:0:0:0:0:1") return "::1";
  const v4 = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (v4?.slice(1).every((o) => Number(o) <= 255)) return host;
  return undefined;
}

/** How the address reads in the log and in messages. */
export function metricsAddressText(a: MetricsAddress): string {
  return a.kind === "unix" ? `unix://${a.path}` : a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}
