// A small closed-loop HTTP/1.1 load generator (like `wrk`/`oha`): `conns` keep-alive TCP
// connections, each sending GET `path` and waiting for the whole response before the next,
// for `durationMs` after `warmupMs`. Raw sockets (Bun.connect) rather than fetch: fetch's
// pool decides how many connections it opens, and its per-request cost would be measured too.
// Responses are parsed just enough to know where they end (Content-Length or chunked).

export interface LoadResult {
  conns: number;
  requests: number;
  /** Responses received in all, the warm-up included. */
  total: number;
  errors: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Status codes seen, with counts. */
  statuses: Record<number, number>;
}

function percentile(sorted: Float64Array, p: number): number {
  if (!sorted.length) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** Where a response in `b` (from 0) ends, or -1 if it is not complete yet; its status in out[0]. */
export function responseEnd(b: Uint8Array, out: number[]): number {
  const text = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const head = text.indexOf("\r\n\r\n");
  if (head < 0) return -1;
  const header = text.toString("latin1", 0, head);
  out[0] = Number(header.slice(9, 12));
  const bodyAt = head + 4;
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(header);
  if (cl) {
    const end = bodyAt + Number(cl[1]);
    return b.length >= end ? end : -1;
  }
  if (!/\r\ntransfer-encoding:\s*chunked/i.test(header)) return bodyAt; // no body
  let at = bodyAt;
  for (;;) {
    const eol = text.indexOf("\r\n", at);
    if (eol < 0) return -1;
    const size = Number.parseInt(text.toString("latin1", at, eol), 16);
    if (Number.isNaN(size)) throw new Error("bad chunk size");
    if (size === 0) {
      // trailers (none expected) end with an empty line
      const end = text.indexOf("\r\n", eol + 2);
      return end < 0 ? -1 : end + 2;
    }
    at = eol + 2 + size + 2;
    if (at > b.length) return -1;
  }
}

export async function load(
  host: string,
  port: number,
  path: string,
  conns: number,
  durationMs: number,
  warmupMs = 1000,
): Promise<LoadResult> {
  const request = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
  const latencies: number[] = [];
  const statuses: Record<number, number> = {};
  let errors = 0;
  let total = 0;
  let measuring = false;
  let stopping = false;
  const tStart = performance.now();
  const measureFrom = tStart + warmupMs;
  const measureTo = measureFrom + durationMs;

  const one = () =>
    new Promise<void>((resolve) => {
      let buf = new Uint8Array(0);
      let sentAt = 0;
      const status = [0];
      const send = (s: { write(b: Uint8Array): number }) => {
        if (stopping) return false;
        sentAt = performance.now();
        s.write(request);
        return true;
      };
      Bun.connect({
        hostname: host,
        port,
        socket: {
          open(s) {
            s.setNoDelay?.(true);
            send(s);
          },
          data(s, chunk) {
            const merged = new Uint8Array(buf.length + chunk.length);
            merged.set(buf);
            merged.set(chunk, buf.length);
            buf = merged;
            let end: number;
            try {
              end = responseEnd(buf, status);
            } catch {
              errors++;
              s.end();
              return;
            }
            if (end < 0) return;
            const now = performance.now();
            total++;
            buf = buf.subarray(end);
            if (measuring && now <= measureTo) {
              latencies.push(now - sentAt);
              statuses[status[0] as number] = (statuses[status[0] as number] ?? 0) + 1;
            }
            if (!send(s)) s.end();
          },
          close() {
            resolve();
          },
          error() {
            errors++;
            resolve();
          },
          connectError() {
            errors++;
            resolve();
          },
        },
      }).catch(() => {
        errors++;
        resolve();
      });
    });

  const all = Array.from({ length: conns }, one);
  await Bun.sleep(Math.max(0, measureFrom - performance.now()));
  measuring = true;
  await Bun.sleep(Math.max(0, measureTo - performance.now()));
  stopping = true;
  await Promise.race([Promise.all(all), Bun.sleep(5000)]);
  const sorted = Float64Array.from(latencies).sort();
  const seconds = durationMs / 1000;
  return {
    conns,
    requests: latencies.length,
    total,
    errors,
    seconds,
    rps: latencies.length / seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    statuses,
  };
}
