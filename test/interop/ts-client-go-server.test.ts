// Our client against the real Go ttrpc server (containerd/ttrpc, via test/interop/go).
// The Go server echoes, on every response, the metadata it received (keys sorted, one
// entry per value) and the time left to the deadline it saw, so what went over the wire
// can be checked from here. If the Go peer cannot be built, every test here fails.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { encodeFrame, writeHeader } from "../../src/ttrpc/frame.ts";
import { Client, Code, type ServiceClient, TtrpcError } from "../../src/ttrpc/index.ts";
import { buildPeer, type ServerProcess, startGoServer } from "../support/go-peer.ts";
import { RawPeer } from "../support/raw-peer.ts";
import { tempDir } from "../support/tmp.ts";
import { EchoDefinition, EchoRequest, EchoResponse } from "./gen/echo.ts";

const SERVICE = "bunwasi.interop.v1.Echo";
const MAX = 4 << 20;
const dir = tempDir();
const sock = join(dir.path, "go.sock");
let server: ServerProcess | null = null;
let client: Client | null = null;
let echo: ServiceClient<typeof EchoDefinition>;
let setupError: unknown = null;

const req = (p: Partial<EchoRequest>) => EchoRequest.fromPartial(p);
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const patterned = (n: number) => Uint8Array.from({ length: n }, (_, i) => i % 251);

beforeAll(async () => {
  try {
    await buildPeer();
    server = await startGoServer(sock);
    client = await Client.connect(sock, { timeoutMs: 5000 });
    echo = client.service(EchoDefinition);
  } catch (e) {
    setupError = e;
  }
}, 600_000);

afterAll(async () => {
  client?.close();
  if (server !== null) expect(await server.stop()).toBe(0); // Go exits 0 on SIGTERM
  dir.cleanup();
});

function ready(): void {
  if (setupError !== null) throw setupError;
}

async function failure(p: Promise<unknown>): Promise<TtrpcError> {
  const e = await p.then(
    () => null,
    (e) => e,
  );
  if (!(e instanceof TtrpcError)) throw new Error(`expected a TtrpcError, got ${e === null ? "success" : String(e)}`);
  return e;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe("our client → Go server", () => {
  test("unary with multi-valued metadata: the Go server saw every value, keys lower-cased", async () => {
    ready();
    const r = await echo.unary(req({ payload: bytes("hello") }), { metadata: { K1: ["a", "b"], k2: "c" } });
    expect(text(r.payload)).toBe("hello");
    expect(r.seq).toBe(0);
    expect(r.metadata).toEqual([
      { key: "k1", value: "a" },
      { key: "k1", value: "b" },
      { key: "k2", value: "c" },
    ]);
    expect(r.deadlineLeftNano).toBe(0); // no timeout sent → no deadline
  });

  test("3 MiB payload round-trips intact", async () => {
    ready();
    const big = patterned(3 << 20);
    const r = await echo.unary(req({ payload: big }));
    expect(r.payload.length).toBe(big.length);
    expect(Buffer.compare(Buffer.from(r.payload), Buffer.from(big))).toBe(0);
  });

  test("oversize send: RESOURCE_EXHAUSTED locally, the connection survives", async () => {
    ready();
    const e = await failure(echo.unary(req({ payload: patterned(5 << 20) })));
    expect(e.code).toBe(Code.RESOURCE_EXHAUSTED);
    expect(e.message).toMatch(new RegExp(`^message length \\d+ exceed maximum message size of ${MAX}$`));
    expect(client!.isClosed).toBe(false);
    const r = await echo.unary(req({ payload: bytes("after") }));
    expect(text(r.payload)).toBe("after");
  });

  test("error status: code and message from Go", async () => {
    ready();
    const e = await failure(echo.unary(req({ failCode: Code.NOT_FOUND, failMessage: "no such thing" })));
    expect(e.code).toBe(Code.NOT_FOUND);
    expect(e.message).toBe("no such thing");
  });

  test("deadline: 200 ms timeout against a ten-minute sleep is DEADLINE_EXCEEDED; the connection survives", async () => {
    ready();
    // The Go handler would sleep ten minutes (past the test's timeout); an answer at all is the deadline.
    const t0 = performance.now();
    const e = await failure(echo.unary(req({ payload: bytes("late"), sleepMs: 600_000 }), { timeoutMs: 200 }));
    console.log(`200 ms deadline → ${e.code} after ${(performance.now() - t0).toFixed(0)} ms (printed, not asserted)`);
    expect(e.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(e.message).toBe("context deadline exceeded");
    const r = await echo.unary(req({ payload: bytes("x") }));
    expect(text(r.payload)).toBe("x");
  });

  test("the Go server sees our timeout as its deadline", async () => {
    ready();
    // What Go sees tracks the timeout sent: within (0, timeout] for each (no deadline reads as 0).
    const r = await echo.unary(req({ payload: bytes("d") }), { timeoutMs: 5000 });
    expect(r.deadlineLeftNano).toBeGreaterThan(0);
    expect(r.deadlineLeftNano).toBeLessThanOrEqual(5_000_000_000);
    const short = await echo.unary(req({}), { timeoutMs: 200 });
    expect(short.deadlineLeftNano).toBeGreaterThan(0);
    expect(short.deadlineLeftNano).toBeLessThanOrEqual(200_000_000);
    console.log(`deadline left in Go (printed): ${r.deadlineLeftNano} of 5e9, ${short.deadlineLeftNano} of 2e8 ns`);
  });

  test("the Go server enforces our timeout_nano too (a late answer from it is DEADLINE_EXCEEDED)", async () => {
    ready();
    // Sent with a raw call so our own timer is out of the picture: timeout_nano only.
    const p = await RawPeer.connect(sock);
    // The handler would sleep ten minutes (past the test's timeout): an answer at all, with
    // this code and Go's message, is the Go server's own deadline.
    const t0 = performance.now();
    p.request(1, {
      service: SERVICE,
      method: "Unary",
      payload: EchoRequest.encode(req({ sleepMs: 600_000 })).finish(),
      timeoutNano: 200e6,
    });
    const a = await p.answer(1, 60_000); // liveness only
    console.log(`timeout_nano 200 ms → Go answered after ${(performance.now() - t0).toFixed(0)} ms (printed, not asserted)`);
    p.close();
    expect(a.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(a.message).toBe("context deadline exceeded");
  });

  test("unknown service and method: UNIMPLEMENTED with Go's exact messages", async () => {
    ready();
    const payload = EchoRequest.encode(req({ payload: bytes("?") })).finish();
    const e1 = await failure(client!.call("no.such.Service", "X", payload));
    expect(e1.code).toBe(Code.UNIMPLEMENTED);
    expect(e1.message).toBe("service no.such.Service");
    const e2 = await failure(client!.call(SERVICE, "Nope", payload));
    expect(e2.code).toBe(Code.UNIMPLEMENTED);
    expect(e2.message).toBe("method Nope");
    expect(text((await echo.unary(req({ payload: bytes("after") }))).payload)).toBe("after");
  });

  test("raw call returns the encoded answer", async () => {
    ready();
    const answer = await client!.call(SERVICE, "Unary", EchoRequest.encode(req({ payload: bytes("raw") })).finish());
    expect(text(EchoResponse.decode(answer).payload)).toBe("raw");
  });

  test("client streaming, with metadata", async () => {
    ready();
    const r = await echo.clientStream(
      ["a", "b", "c"].map((p) => req({ payload: bytes(p) })),
      { metadata: { stream: "client" } },
    );
    expect(text(r.payload)).toBe("abc");
    expect(r.seq).toBe(3);
    expect(r.metadata).toEqual([{ key: "stream", value: "client" }]);
  });

  test("client streaming from an async source; an empty stream", async () => {
    ready();
    async function* gen() {
      for (let i = 0; i < 50; i++) {
        if (i % 10 === 0) await Bun.sleep(1);
        yield req({ payload: bytes(String(i % 10)) });
      }
    }
    const r = await echo.clientStream(gen());
    expect(r.seq).toBe(50);
    expect(text(r.payload)).toBe("0123456789".repeat(5));
    const empty = await echo.clientStream([]);
    expect(empty.seq).toBe(0);
    expect(empty.payload.length).toBe(0);
  });

  test("client streaming: a failing message ends the call with Go's status", async () => {
    ready();
    const e = await failure(echo.clientStream([req({ payload: bytes("a") }), req({ failCode: Code.ABORTED, failMessage: "stop here" })]));
    expect(e.code).toBe(Code.ABORTED);
    expect(e.message).toBe("stop here");
  });

  test("server streaming, with metadata and deadline on every message", async () => {
    ready();
    const rs = await collect(echo.serverStream(req({ payload: bytes("x"), repeat: 5 }), { metadata: { a: ["1", "2"] }, timeoutMs: 5000 }));
    expect(rs.map((r) => r.seq)).toEqual([0, 1, 2, 3, 4]);
    expect(rs.map((r) => text(r.payload))).toEqual(["x", "x", "x", "x", "x"]);
    for (const r of rs) {
      expect(r.metadata).toEqual([
        { key: "a", value: "1" },
        { key: "a", value: "2" },
      ]);
      expect(r.deadlineLeftNano).toBeGreaterThan(0);
      expect(r.deadlineLeftNano).toBeLessThanOrEqual(5_000_000_000);
    }
  });

  test("server streaming: zero messages, and an error before the first", async () => {
    ready();
    expect(await collect(echo.serverStream(req({ repeat: 0 })))).toEqual([]);
    const e = await failure(collect(echo.serverStream(req({ repeat: 3, failCode: Code.PERMISSION_DENIED, failMessage: "nope" }))));
    expect(e.code).toBe(Code.PERMISSION_DENIED);
    expect(e.message).toBe("nope");
  });

  test("a large server stream arrives complete", async () => {
    ready();
    let n = 0;
    let total = 0;
    for await (const r of echo.serverStream(req({ payload: patterned(64 << 10), repeat: 200 }))) {
      expect(r.seq).toBe(n);
      n++;
      total += r.payload.length;
      if (n % 50 === 0) await Bun.sleep(5); // a slow reader
    }
    expect(n).toBe(200);
    expect(total).toBe(200 * (64 << 10));
  });

  test("bidirectional lock-step, then a clean end when we close our side", async () => {
    ready();
    let release: () => void = () => {};
    async function* requests() {
      for (let i = 1; i <= 10; i++) {
        yield req({ payload: bytes(String(i)) });
        await new Promise<void>((r) => {
          release = r;
        });
      }
    }
    const got: string[] = [];
    for await (const r of echo.bidi(requests(), { metadata: { mode: "bidi" } })) {
      got.push(`${r.seq}:${text(r.payload)}`);
      expect(r.metadata).toEqual([{ key: "mode", value: "bidi" }]);
      release();
    }
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => `${i}:${i + 1}`));
  });

  test("bidirectional: Go's error status ends the stream", async () => {
    ready();
    const got: number[] = [];
    const e = await failure(
      (async () => {
        for await (const r of echo.bidi([req({ payload: bytes("1") }), req({ failCode: Code.OUT_OF_RANGE, failMessage: "too far" })]))
          got.push(r.seq);
      })(),
    );
    expect(got).toEqual([0]);
    expect(e.code).toBe(Code.OUT_OF_RANGE);
    expect(e.message).toBe("too far");
  });

  test("1000 concurrent calls on one connection", async () => {
    ready();
    const rs = await Promise.all(Array.from({ length: 1000 }, (_, i) => echo.unary(req({ payload: bytes(String(i)) }))));
    let mismatched = 0;
    rs.forEach((r, i) => {
      if (text(r.payload) !== String(i)) mismatched++;
    });
    expect(mismatched).toBe(0);
  });

  test("an aborted call fails with CANCELLED; the connection goes on", async () => {
    ready();
    const ac = new AbortController();
    const p = echo.unary(req({ sleepMs: 500 }), { signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    const e = await failure(p);
    expect(e.code).toBe(Code.CANCELLED);
    expect(text((await echo.unary(req({ payload: bytes("next") }))).payload)).toBe("next");
  });

  test("garbage sent to the Go server on another connection does not hurt ours", async () => {
    ready();
    // An oversize frame (the Go server discards it and answers RESOURCE_EXHAUSTED)...
    const big = await RawPeer.connect(sock);
    const len = MAX + 1;
    const frame = new Uint8Array(10 + len);
    writeHeader(frame, 0, len, 1, 1, 0);
    big.send(frame);
    const a = await big.answer(1);
    expect(a.code).toBe(Code.RESOURCE_EXHAUSTED);
    expect(a.message).toBe(`message length ${len} exceed maximum message size of ${MAX}`);
    big.close();
    // ...a request that is not protobuf, then pure junk bytes.
    const junk = await RawPeer.connect(sock);
    junk.send(encodeFrame(1, 1, 0, new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff])));
    junk.send(Uint8Array.from({ length: 300 }, (_, i) => (i * 131 + 7) & 0xff));
    await Bun.sleep(100);
    junk.close();
    // Our connection, opened before all this, and a new one both still work.
    const r = await echo.unary(req({ payload: bytes("still here") }));
    expect(text(r.payload)).toBe("still here");
    const fresh = await Client.connect(sock);
    const r2 = await fresh.service(EchoDefinition).unary(req({ payload: bytes("fresh") }));
    expect(text(r2.payload)).toBe("fresh");
    fresh.close();
    expect(client!.isClosed).toBe(false);
  });

  test("the Go server closing the connection fails calls in flight with UNAVAILABLE", async () => {
    ready();
    // Last test: stop the server while a call sleeps in it (graceful Shutdown waits
    // 2 s at most, then closes), and watch our client notice.
    const other = await Client.connect(sock);
    const p = failure(other.service(EchoDefinition).unary(req({ sleepMs: 10_000 })));
    await Bun.sleep(50);
    const code = await server!.stop(8000);
    expect(code).toBe(0);
    const e = await p;
    expect(e.code).toBe(Code.UNAVAILABLE);
    await other.closed;
    expect(other.isClosed).toBe(true);
    server = null;
  }, 15_000);
});
