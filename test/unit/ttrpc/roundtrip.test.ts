// Our client against our server over a real unix socket: every call kind, metadata,
// deadlines, errors, and the connection rules.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Client, Code, Server, type ServiceClient, TtrpcError } from "../../../src/ttrpc/index.ts";
import { EchoDefinition, EchoRequest } from "../../interop/gen/echo.ts";
import { echoService } from "../../support/echo-service.ts";
import { tempDir } from "../../support/tmp.ts";

const dir = tempDir();
const sock = join(dir.path, "echo.sock");
const server = new Server().register(EchoDefinition, echoService);
let client: Client;
let echo: ServiceClient<typeof EchoDefinition>;

const req = (p: Partial<EchoRequest>) => EchoRequest.fromPartial(p);
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

beforeAll(async () => {
  server.listen(sock);
  client = await Client.connect(sock);
  echo = client.service(EchoDefinition);
});
afterAll(() => {
  client.close();
  server.close();
  dir.cleanup();
});

describe("unary", () => {
  test("echoes payload and multi-valued metadata", async () => {
    const r = await echo.unary(req({ payload: bytes("hello") }), { metadata: { K1: ["a", "b"], k2: "c" } });
    expect(text(r.payload)).toBe("hello");
    expect(r.metadata).toEqual([
      { key: "k1", value: "a" },
      { key: "k1", value: "b" },
      { key: "k2", value: "c" },
    ]);
    expect(r.deadlineLeftNano).toBe(0);
  });

  test("status code and message reach the caller", async () => {
    const err = await echo.unary(req({ failCode: Code.NOT_FOUND, failMessage: "no such thing" })).catch((e) => e);
    expect(err).toBeInstanceOf(TtrpcError);
    expect(err.code).toBe(Code.NOT_FOUND);
    expect(err.message).toBe("no such thing");
  });

  test("the deadline is sent and enforced", async () => {
    // What the server sees tracks the timeout sent: within (0, timeout], never a default.
    const seen = await echo.unary(req({}), { timeoutMs: 5000 });
    expect(seen.deadlineLeftNano).toBeGreaterThan(0);
    expect(seen.deadlineLeftNano).toBeLessThanOrEqual(5_000_000_000);
    const short = await echo.unary(req({}), { timeoutMs: 200 });
    expect(short.deadlineLeftNano).toBeGreaterThan(0);
    expect(short.deadlineLeftNano).toBeLessThanOrEqual(200_000_000);
    // A ten-minute sleep (past the test's timeout) answered at all: the deadline cut it short.
    const t0 = performance.now();
    const err = await echo.unary(req({ sleepMs: 600_000 }), { timeoutMs: 100 }).catch((e) => e);
    console.log(`100 ms deadline → ${err.code} after ${(performance.now() - t0).toFixed(0)} ms (printed, not asserted)`);
    expect(err).toBeInstanceOf(TtrpcError);
    expect(err.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(err.message).toBe("context deadline exceeded");
    // and the connection is still good
    expect((await echo.unary(req({ payload: bytes("after") }))).payload).toEqual(bytes("after"));
  });

  test("unknown service and method are UNIMPLEMENTED", async () => {
    const e1 = await client.call("no.such.Service", "X", new Uint8Array()).catch((e) => e);
    expect(e1.code).toBe(Code.UNIMPLEMENTED);
    expect(e1.message).toBe("service no.such.Service");
    const e2 = await client.call("bunwasi.interop.v1.Echo", "Nope", new Uint8Array()).catch((e) => e);
    expect(e2.code).toBe(Code.UNIMPLEMENTED);
    expect(e2.message).toBe("method Nope");
  });

  test("oversize send is refused before writing; the connection survives", async () => {
    const err = await echo.unary(req({ payload: new Uint8Array(5 << 20) })).catch((e) => e);
    expect(err.code).toBe(Code.RESOURCE_EXHAUSTED);
    const r = await echo.unary(req({ payload: bytes("after") }));
    expect(text(r.payload)).toBe("after");
  });

  test("3 MiB payload round-trips intact", async () => {
    const big = new Uint8Array(3 << 20).map((_, i) => i % 251);
    const r = await echo.unary(req({ payload: big }));
    expect(r.payload.length).toBe(big.length);
    expect(Buffer.compare(Buffer.from(r.payload), Buffer.from(big))).toBe(0);
  });

  test("1000 concurrent calls on one connection", async () => {
    const rs = await Promise.all(Array.from({ length: 1000 }, (_, i) => echo.unary(req({ payload: bytes(String(i)) }))));
    for (const [i, r] of rs.entries()) expect(text(r.payload)).toBe(String(i));
  });

  test("an aborted call fails with CANCELLED", async () => {
    const ac = new AbortController();
    const p = echo.unary(req({ sleepMs: 2000 }), { signal: ac.signal });
    ac.abort();
    const err = await p.catch((e) => e);
    expect(err.code).toBe(Code.CANCELLED);
  });
});

describe("streams", () => {
  test("client streaming", async () => {
    const r = await echo.clientStream(["a", "b", "c"].map((p) => req({ payload: bytes(p) })));
    expect(text(r.payload)).toBe("abc");
    expect(r.seq).toBe(3);
  });

  test("server streaming", async () => {
    const seqs: number[] = [];
    for await (const r of echo.serverStream(req({ payload: bytes("x"), repeat: 5 }))) {
      expect(text(r.payload)).toBe("x");
      seqs.push(r.seq);
    }
    expect(seqs).toEqual([0, 1, 2, 3, 4]);
  });

  test("server streaming error ends the stream with the status", async () => {
    const got: number[] = [];
    const err = await (async () => {
      for await (const r of echo.serverStream(req({ failCode: Code.PERMISSION_DENIED, failMessage: "nope" }))) got.push(r.seq);
    })().catch((e) => e);
    expect(got).toEqual([]);
    expect(err.code).toBe(Code.PERMISSION_DENIED);
  });

  test("bidirectional, lock-step", async () => {
    const q: string[] = [];
    let release: () => void = () => {};
    async function* requests() {
      for (let i = 1; i <= 10; i++) {
        yield req({ payload: bytes(String(i)) });
        await new Promise<void>((r) => {
          release = r;
        });
      }
    }
    for await (const r of echo.bidi(requests())) {
      q.push(`${r.seq}:${text(r.payload)}`);
      release();
    }
    expect(q).toEqual(Array.from({ length: 10 }, (_, i) => `${i}:${i + 1}`));
  });

  test("a big server stream arrives complete under backpressure", async () => {
    let n = 0;
    let bytesIn = 0;
    for await (const r of echo.serverStream(req({ payload: new Uint8Array(64 << 10), repeat: 400 }))) {
      n++;
      bytesIn += r.payload.length;
      if (n % 50 === 0) await Bun.sleep(5); // a slow reader
    }
    expect(n).toBe(400);
    expect(bytesIn).toBe(400 * (64 << 10));
  });
});
