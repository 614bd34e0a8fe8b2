// Our ttrpc client as a load generator, mirroring `ttrpc-peer bench-client`
// (test/interop/go/bench.go): same flags, same JSON line.
//
//   bun bench/ttrpc/ts-bench-client.ts -socket PATH [-conns 1] [-inflight 1]
//       [-duration 5s] [-warmup 1s] [-size 1024]
//
// `conns` connections × `inflight` callers per connection, each looping Unary echo
// calls with a `size`-byte payload (bytes i%251). After the warm-up, the calls that
// complete within `duration` are counted and their latencies (each call timed on its
// own) give p50/p99.
import { Client, type ServiceClient } from "../../src/ttrpc/index.ts";
import { EchoDefinition, EchoRequest } from "../../test/interop/gen/echo.ts";

interface Flags {
  socket: string;
  conns: number;
  inflight: number;
  durationMs: number;
  warmupMs: number;
  size: number;
}

/** Go's time.ParseDuration for the forms we need: "5s", "500ms", "1m30s", "1.5s", "100us". */
export function parseDuration(s: string): number {
  const units: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let at = 0;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    total += Number(m[1]) * units[m[2]!]!;
    at = re.lastIndex;
  }
  if (at !== s.length || s.length === 0) {
    if (/^\d+(\.\d+)?$/.test(s) && Number(s) === 0) return 0;
    throw new Error(`bad duration ${JSON.stringify(s)}`);
  }
  return total;
}

function parseFlags(argv: string[]): Flags {
  const f: Flags = { socket: "", conns: 1, inflight: 1, durationMs: 5000, warmupMs: 1000, size: 1024 };
  for (let i = 0; i < argv.length; i++) {
    let name = argv[i]!.replace(/^--?/, "");
    let value: string | undefined;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    } else value = argv[++i];
    if (value === undefined) throw new Error(`flag -${name} needs a value`);
    switch (name) {
      case "socket":
        f.socket = value;
        break;
      case "conns":
        f.conns = Number(value);
        break;
      case "inflight":
        f.inflight = Number(value);
        break;
      case "duration":
        f.durationMs = parseDuration(value);
        break;
      case "warmup":
        f.warmupMs = parseDuration(value);
        break;
      case "size":
        f.size = Number(value);
        break;
      default:
        throw new Error(`unknown flag -${name}`);
    }
  }
  if (f.socket === "" || !(f.conns >= 1) || !(f.inflight >= 1) || !(f.durationMs > 0) || !(f.size >= 0))
    throw new Error("need -socket, -conns >= 1, -inflight >= 1, -duration > 0");
  return f;
}

async function dial(path: string): Promise<Client> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      return await Client.connect(path, { timeoutMs: 5000 });
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await Bun.sleep(20);
    }
  }
}

async function main(): Promise<void> {
  let f: Flags;
  try {
    f = parseFlags(process.argv.slice(2));
  } catch (e) {
    console.error(`ts-bench-client: ${(e as Error).message}`);
    process.exit(2);
  }
  const clients: Client[] = [];
  for (let i = 0; i < f.conns; i++) clients.push(await dial(f.socket));
  const payload = Uint8Array.from({ length: f.size }, (_, i) => i % 251);

  let measuring = false;
  let stop = false;
  let errors = 0;
  let firstErr: string | null = null;
  const lats: number[][] = [];

  async function worker(echo: ServiceClient<typeof EchoDefinition>, mine: number[]): Promise<void> {
    const req = EchoRequest.fromPartial({ payload });
    while (!stop) {
      const t0 = performance.now();
      let err: unknown = null;
      try {
        await echo.unary(req);
      } catch (e) {
        err = e;
      }
      const d = performance.now() - t0;
      if (!measuring) continue;
      if (err !== null) {
        errors++;
        firstErr ??= String(err);
        continue;
      }
      mine.push(d);
    }
  }

  const workers: Promise<void>[] = [];
  for (const c of clients) {
    const echo = c.service(EchoDefinition);
    for (let j = 0; j < f.inflight; j++) {
      const mine: number[] = [];
      lats.push(mine);
      workers.push(worker(echo, mine));
    }
  }

  await Bun.sleep(f.warmupMs);
  measuring = true;
  const start = performance.now();
  await Bun.sleep(f.durationMs);
  measuring = false;
  const elapsedMs = performance.now() - start;
  stop = true;
  await Promise.all(workers);
  for (const c of clients) c.close();

  const all = Float64Array.from(lats.flat()).sort();
  const pct = (p: number) => {
    if (all.length === 0) return 0;
    const i = Math.max(0, Math.min(Math.ceil(p * all.length) - 1, all.length - 1));
    return Math.round(all[i]! * 100_000) / 100; // ms → µs, 2 decimals
  };
  const secs = elapsedMs / 1000;
  const res = {
    conns: f.conns,
    inflight: f.inflight,
    size: f.size,
    calls: all.length,
    errors,
    seconds: Math.round(secs * 1000) / 1000,
    calls_per_sec: Math.round(all.length / secs),
    p50_us: pct(0.5),
    p99_us: pct(0.99),
  };
  console.log(JSON.stringify(res));
  if (firstErr !== null) console.error(`ts-bench-client: ${errors} errors, first: ${firstErr}`);
  process.exit(0);
}

if (import.meta.main) {
  await main().catch((e) => {
    console.error(`ts-bench-client: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
