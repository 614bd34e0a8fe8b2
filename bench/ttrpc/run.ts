// ttrpc throughput/latency: Go (containerd/ttrpc v1.2.10) and ours, both directions,
// measured in the same run on the same machine.
//
//   bun bench/ttrpc/run.ts [--duration 5] [--size 1024] [--warmup 1] [--repeat 1]
//                          [--rows 1x1,1x64,8x64] [--json]
//
// For every row (connections × calls in flight per connection) four pairs run one
// after another, each client a process of its own against a server process of its own:
//   go→go   ttrpc-peer bench-client → ttrpc-peer server
//   go→ts   ttrpc-peer bench-client → test/support/echo-server.ts
//   ts→go   bench/ttrpc/ts-bench-client.ts → ttrpc-peer server
//   ts→ts   bench/ttrpc/ts-bench-client.ts → test/support/echo-server.ts
// Unary echo of `size` bytes; warm-up, then `duration` seconds measured. With
// --repeat N every cell is the median of N runs (pair order rotates between repeats).
// The table's ratio is calls/s relative to go→go in the same row.
import { join } from "node:path";
import {
  type BenchOptions,
  type BenchResult,
  benchArgs,
  buildPeer,
  parseJsonLine,
  REPO_ROOT,
  runGoBench,
  type ServerProcess,
  startGoServer,
  startTsServer,
} from "../../test/support/go-peer.ts";
import { tempDir } from "../../test/support/tmp.ts";

const TS_CLIENT = join(REPO_ROOT, "bench/ttrpc/ts-bench-client.ts");

type Side = "go" | "ts";
interface Pair {
  name: string;
  client: Side;
  server: Side;
}
const PAIRS: Pair[] = [
  { name: "go→go", client: "go", server: "go" },
  { name: "go→ts", client: "go", server: "ts" },
  { name: "ts→go", client: "ts", server: "go" },
  { name: "ts→ts", client: "ts", server: "ts" },
];

interface Args {
  durationS: number;
  warmupS: number;
  size: number;
  repeat: number;
  rows: { conns: number; inflight: number }[];
  json: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { durationS: 5, warmupS: 1, size: 1024, repeat: 1, rows: [], json: false };
  let rows = "1x1,1x64,8x64";
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === "--duration") a.durationS = Number(value());
    else if (flag === "--warmup") a.warmupS = Number(value());
    else if (flag === "--size") a.size = Number(value());
    else if (flag === "--repeat") a.repeat = Number(value());
    else if (flag === "--rows") rows = value();
    else if (flag === "--json") a.json = true;
    else throw new Error(`unknown flag ${flag}`);
  }
  a.rows = rows.split(/[ ,]+/).map((r) => {
    const m = /^(\d+)x(\d+)$/.exec(r);
    if (m === null) throw new Error(`bad row ${r} (want CONNSxINFLIGHT)`);
    return { conns: Number(m[1]), inflight: Number(m[2]) };
  });
  if (!(a.durationS > 0) || !(a.warmupS >= 0) || !(a.size >= 0) || !(a.repeat >= 1))
    throw new Error("bad --duration/--warmup/--size/--repeat");
  return a;
}

async function runTsBench(socket: string, o: BenchOptions): Promise<BenchResult> {
  const proc = Bun.spawn([process.execPath, TS_CLIENT, ...benchArgs(socket, o)], { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe" });
  const killer = setTimeout(() => proc.kill("SIGKILL"), (o.durationS + o.warmupS) * 1000 + 30_000);
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(killer);
  if (code !== 0) throw new Error(`ts-bench-client exited ${code}\nstdout: ${out}\nstderr: ${err}`);
  if (err.trim() !== "") console.error(err.trim());
  return parseJsonLine(out, "ts-bench-client") as BenchResult;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const fmtInt = (n: number) => Math.round(n).toLocaleString("en-US");
const fmtUs = (n: number) => (n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(1));

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  await buildPeer();
  const dir = tempDir("bunwasi-bench-");
  const servers: Partial<Record<Side, ServerProcess>> = {};
  const cleanup = async () => {
    await Promise.all(Object.values(servers).map((s) => s?.stop()));
    dir.cleanup();
  };
  process.on("SIGINT", () => void cleanup().then(() => process.exit(130)));
  try {
    servers.go = await startGoServer(join(dir.path, "go.sock"));
    servers.ts = await startTsServer(join(dir.path, "ts.sock"));
    const results = new Map<string, BenchResult[]>();
    const key = (row: { conns: number; inflight: number }, pair: Pair) => `${row.conns}x${row.inflight} ${pair.name}`;
    const total = args.repeat * args.rows.length * PAIRS.length;
    let n = 0;
    for (let rep = 0; rep < args.repeat; rep++) {
      for (const row of args.rows) {
        const order = PAIRS.map((_, i) => PAIRS[(i + rep) % PAIRS.length]!);
        for (const pair of order) {
          const socket = servers[pair.server]!.socket;
          const o: BenchOptions = { ...row, durationS: args.durationS, warmupS: args.warmupS, size: args.size };
          const r = pair.client === "go" ? await runGoBench(socket, o) : await runTsBench(socket, o);
          n++;
          console.error(
            `[${n}/${total}] ${row.conns}x${row.inflight} ${pair.name}: ${fmtInt(r.calls_per_sec)} calls/s, p50 ${r.p50_us} µs, p99 ${r.p99_us} µs, errors ${r.errors}`,
          );
          if (r.errors > 0) console.error(`  warning: ${r.errors} errors`);
          const k = key(row, pair);
          results.set(k, [...(results.get(k) ?? []), r]);
        }
      }
      for (const s of ["go", "ts"] as const) {
        if (servers[s]!.proc.exitCode !== null) throw new Error(`${s} server died: ${servers[s]!.stderr()}`);
      }
    }

    const rows: { row: string; pair: string; cps: number; p50: number; p99: number; ratio: number; errors: number }[] = [];
    for (const row of args.rows) {
      const base = median(results.get(key(row, PAIRS[0]!))!.map((r) => r.calls_per_sec));
      for (const pair of PAIRS) {
        const rs = results.get(key(row, pair))!;
        const cps = median(rs.map((r) => r.calls_per_sec));
        rows.push({
          row: `${row.conns}×${row.inflight}`,
          pair: pair.name,
          cps,
          p50: median(rs.map((r) => r.p50_us)),
          p99: median(rs.map((r) => r.p99_us)),
          ratio: cps / base,
          errors: rs.reduce((a, r) => a + r.errors, 0),
        });
      }
    }
    if (args.json) {
      console.log(JSON.stringify({ args, rows, raw: Object.fromEntries(results) }));
      return;
    }
    const what = args.repeat > 1 ? `medians of ${args.repeat} runs` : "one run";
    console.log(
      `\nttrpc unary echo, ${args.size} B payload, ${args.durationS} s measured after ${args.warmupS} s warm-up, ${what}; ratio = calls/s ÷ go→go of the row\n`,
    );
    console.log("| row (conns×inflight) | pair (client→server) | calls/s | p50 µs | p99 µs | ratio |");
    console.log("|---|---|---:|---:|---:|---:|");
    for (const r of rows) {
      console.log(
        `| ${r.row} | ${r.pair} | ${fmtInt(r.cps)} | ${fmtUs(r.p50)} | ${fmtUs(r.p99)} | ${r.ratio.toFixed(2)}×${r.errors > 0 ? ` (${r.errors} errors)` : ""} |`,
      );
    }
    console.log("\nTargets: our server ≥ 1.00× (go→ts), our client ≥ 0.80× (ts→go).");
    for (const row of args.rows) {
      const label = `${row.conns}×${row.inflight}`;
      const srv = rows.find((r) => r.row === label && r.pair === "go→ts")!.ratio;
      const cli = rows.find((r) => r.row === label && r.pair === "ts→go")!.ratio;
      console.log(
        `- ${label}: server ${srv.toFixed(2)}× ${srv >= 1 ? "ok" : "BELOW"}, client ${cli.toFixed(2)}× ${cli >= 0.8 ? "ok" : "BELOW"}`,
      );
    }
  } finally {
    await cleanup();
  }
}

await main().catch((e) => {
  console.error(`bench/ttrpc/run.ts: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exit(1);
});
