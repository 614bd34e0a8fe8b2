// Server and client interceptors: order, what they see, and what they may change or
// refuse, for unary calls and for each kind of stream.
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  Client,
  type ClientInterceptor,
  Code,
  Server,
  type ServerCall,
  type ServerInterceptor,
  TtrpcError,
} from "../../../src/ttrpc/index.ts";
import { EchoDefinition, EchoRequest } from "../../interop/gen/echo.ts";
import { echoService } from "../../support/echo-service.ts";
import { tempDir } from "../../support/tmp.ts";

const dir = tempDir();
afterAll(() => dir.cleanup());
let n = 0;

const req = (p: Partial<EchoRequest>) => EchoRequest.fromPartial(p);
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** A server with `interceptors`, and a client connected to it with `clientInterceptors`. */
async function setup(interceptors: ServerInterceptor[], clientInterceptors: ClientInterceptor[] = []) {
  const sock = join(dir.path, `i${n++}.sock`);
  const server = new Server({ interceptors }).register(EchoDefinition, echoService);
  server.listen(sock);
  const client = await Client.connect(sock, { interceptors: clientInterceptors });
  return {
    echo: client.service(EchoDefinition),
    client,
    [Symbol.dispose]() {
      client.close();
      server.close();
    },
  };
}

describe("server interceptors", () => {
  test("run in order around the handler and see the call", async () => {
    const log: string[] = [];
    const seen: ServerCall[] = [];
    const tag =
      (name: string): ServerInterceptor =>
      async (call, next) => {
        log.push(`${name} in`);
        seen.push(call);
        const r = await next(call);
        log.push(`${name} out`);
        return r;
      };
    using s = await setup([tag("a"), tag("b")]);
    const r = await s.echo.unary(req({ payload: bytes("x") }), { metadata: { who: "me" } });
    expect(text(r.payload)).toBe("x");
    expect(log).toEqual(["a in", "b in", "b out", "a out"]);
    const call = seen[0]!;
    expect(call.service).toBe("bunwasi.interop.v1.Echo");
    expect(call.method).toBe("Unary");
    expect([call.requestStream, call.responseStream]).toEqual([false, false]);
    expect((call.request as EchoRequest).payload).toEqual(bytes("x"));
    expect(call.ctx.metadata.who).toEqual(["me"]);
    expect(call.ctx.handshake).toBeUndefined();
  });

  test("may replace the request and the response", async () => {
    using s = await setup([
      async (call, next) => {
        const request = call.request as EchoRequest;
        const r = (await next({ ...call, request: { ...request, payload: bytes(`<${text(request.payload)}>`) } })) as {
          payload: Uint8Array;
        };
        return { ...r, payload: bytes(`${text(r.payload)}!`) };
      },
    ]);
    const r = await s.echo.unary(req({ payload: bytes("x") }));
    expect(text(r.payload)).toBe("<x>!");
  });

  test("may refuse a call: the handler does not run and the client gets the status", async () => {
    let handled = 0;
    const sock = join(dir.path, `i${n++}.sock`);
    const server = new Server({
      interceptors: [
        async (call, next) => {
          if (call.ctx.metadata.token?.[0] !== "secret") throw new TtrpcError(Code.UNAUTHENTICATED, "no token");
          return next(call);
        },
      ],
    }).register(EchoDefinition, {
      async unary(r) {
        handled++;
        return { payload: r.payload, seq: 0, metadata: [], deadlineLeftNano: 0 };
      },
    });
    server.listen(sock);
    const client = await Client.connect(sock);
    try {
      const echo = client.service(EchoDefinition);
      const err = await echo.unary(req({})).catch((e) => e);
      expect(err).toBeInstanceOf(TtrpcError);
      expect(err.code).toBe(Code.UNAUTHENTICATED);
      expect(err.message).toBe("no token");
      expect(handled).toBe(0);
      const ok = await echo.unary(req({ payload: bytes("in") }), { metadata: { token: "secret" } });
      expect(text(ok.payload)).toBe("in");
      expect(handled).toBe(1);
    } finally {
      client.close();
      server.close();
    }
  });

  test("see a handler's error and may change it", async () => {
    using s = await setup([
      async (call, next) => {
        try {
          return await next(call);
        } catch (e) {
          throw new TtrpcError(Code.INTERNAL, `wrapped: ${(e as Error).message}`);
        }
      },
    ]);
    const err = await s.echo.unary(req({ failCode: Code.NOT_FOUND, failMessage: "gone" })).catch((e) => e);
    expect(err.code).toBe(Code.INTERNAL);
    expect(err.message).toBe("wrapped: gone");
  });

  test("a server stream: next resolves after the last message; the stream closes when the interceptor does", async () => {
    const events: string[] = [];
    using s = await setup([
      async (call, next) => {
        expect([call.requestStream, call.responseStream]).toEqual([false, true]);
        const r = await next(call);
        events.push(`next resolved with ${String(r)}`);
        throw new TtrpcError(Code.ABORTED, "after the stream");
      },
    ]);
    const got: number[] = [];
    const err = await (async () => {
      for await (const r of s.echo.serverStream(req({ payload: bytes("s"), repeat: 3 }))) got.push(r.seq);
    })().catch((e) => e);
    expect(got).toEqual([0, 1, 2]);
    expect(events).toEqual(["next resolved with undefined"]);
    expect(err.code).toBe(Code.ABORTED);
    expect(err.message).toBe("after the stream");
  });

  test("a client stream: the interceptor may wrap the requests the handler reads", async () => {
    let counted = 0;
    using s = await setup([
      async (call, next) => {
        expect([call.requestStream, call.responseStream]).toEqual([true, false]);
        const input = call.request as AsyncIterable<EchoRequest>;
        async function* counting() {
          for await (const r of input) {
            counted++;
            yield r;
          }
        }
        return next({ ...call, request: counting() });
      },
    ]);
    const r = await s.echo.clientStream(["a", "b", "c", "d"].map((p) => req({ payload: bytes(p) })));
    expect(text(r.payload)).toBe("abcd");
    expect(counted).toBe(4);
  });

  test("bidi calls pass through", async () => {
    const kinds: boolean[][] = [];
    using s = await setup([
      async (call, next) => {
        kinds.push([call.requestStream, call.responseStream]);
        return next(call);
      },
    ]);
    const out: string[] = [];
    for await (const r of s.echo.bidi(["p", "q"].map((p) => req({ payload: bytes(p) })))) out.push(text(r.payload));
    expect(out).toEqual(["p", "q"]);
    expect(kinds).toEqual([[true, true]]);
  });
});

describe("client interceptors", () => {
  test("run in order and may add metadata the server receives", async () => {
    const log: string[] = [];
    const add =
      (key: string): ClientInterceptor =>
      async (call, next) => {
        log.push(`${key} in`);
        const r = await next({ ...call, options: { ...call.options, metadata: { ...call.options.metadata, [key]: key.toUpperCase() } } });
        log.push(`${key} out`);
        return r;
      };
    using s = await setup([], [add("first"), add("second")]);
    const r = await s.echo.unary(req({ payload: bytes("m") }), { metadata: { mine: "yes" } });
    expect(log).toEqual(["first in", "second in", "second out", "first out"]);
    expect(r.metadata).toEqual([
      { key: "first", value: "FIRST" },
      { key: "mine", value: "yes" },
      { key: "second", value: "SECOND" },
    ]);
  });

  test("see the call and its response, and may answer without sending", async () => {
    const seen: string[] = [];
    using s = await setup(
      [],
      [
        async (call, next) => {
          seen.push(`${call.service}/${call.method} ${call.requestStream} ${call.responseStream}`);
          if (text((call.request as EchoRequest).payload) === "cached")
            return { payload: bytes("from cache"), seq: 7, metadata: [], deadlineLeftNano: 0 };
          const r = (await next(call)) as { seq: number };
          seen.push(`seq ${r.seq}`);
          return r;
        },
      ],
    );
    expect((await s.echo.unary(req({ payload: bytes("live") }))).seq).toBe(0);
    const cached = await s.echo.unary(req({ payload: bytes("cached") }));
    expect([text(cached.payload), cached.seq]).toEqual(["from cache", 7]);
    expect(seen).toEqual(["bunwasi.interop.v1.Echo/Unary false false", "seq 0", "bunwasi.interop.v1.Echo/Unary false false"]);
  });

  test("what an interceptor throws is what the caller gets", async () => {
    using s = await setup(
      [],
      [
        async () => {
          throw new TtrpcError(Code.FAILED_PRECONDITION, "not now");
        },
      ],
    );
    const err = await s.echo.unary(req({})).catch((e) => e);
    expect(err.code).toBe(Code.FAILED_PRECONDITION);
    expect(err.message).toBe("not now");
  });

  test("a server stream flows through; next resolves once the server ended it", async () => {
    const events: string[] = [];
    using s = await setup(
      [],
      [
        async (call, next) => {
          const r = await next(call);
          events.push(`ended ${String(r)}`);
          return r;
        },
      ],
    );
    const got: number[] = [];
    for await (const r of s.echo.serverStream(req({ payload: bytes("z"), repeat: 4 }))) {
      got.push(r.seq);
      events.push(`msg ${r.seq}`);
    }
    expect(got).toEqual([0, 1, 2, 3]);
    expect(events.at(-1)).toBe("ended undefined");
    expect(events.filter((e) => e.startsWith("msg"))).toEqual(["msg 0", "msg 1", "msg 2", "msg 3"]);
  });

  test("a stream's server error reaches the interceptor and the caller", async () => {
    const seen: number[] = [];
    using s = await setup(
      [],
      [
        async (call, next) =>
          next(call).catch((e) => {
            seen.push(e.code);
            throw e;
          }),
      ],
    );
    const err = await (async () => {
      for await (const _ of s.echo.serverStream(req({ failCode: Code.OUT_OF_RANGE, failMessage: "too far" }))) {
      }
    })().catch((e) => e);
    expect(err.code).toBe(Code.OUT_OF_RANGE);
    expect(seen).toEqual([Code.OUT_OF_RANGE]);
  });

  test("client and bidi streams, and Client.call with encoded bytes", async () => {
    const seen: string[] = [];
    using s = await setup(
      [],
      [
        async (call, next) => {
          seen.push(`${call.method} ${call.request instanceof Uint8Array ? "bytes" : typeof call.request}`);
          return next(call);
        },
      ],
    );
    const cs = await s.echo.clientStream([req({ payload: bytes("1") }), req({ payload: bytes("2") })]);
    expect(text(cs.payload)).toBe("12");
    const bidi: string[] = [];
    for await (const r of s.echo.bidi([req({ payload: bytes("b") })])) bidi.push(text(r.payload));
    expect(bidi).toEqual(["b"]);
    const raw = await s.client.call("bunwasi.interop.v1.Echo", "Unary", EchoRequest.encode(req({ payload: bytes("raw") })).finish());
    expect(raw).toBeInstanceOf(Uint8Array);
    expect(seen).toEqual(["ClientStream object", "Bidi object", "Unary bytes"]);
  });

  test("a caller that stops reading a stream early stops the call underneath", async () => {
    let finished = false;
    using s = await setup(
      [],
      [
        async (call, next) => {
          const r = await next(call);
          finished = true;
          return r;
        },
      ],
    );
    const got: number[] = [];
    for await (const r of s.echo.serverStream(req({ payload: bytes("e"), repeat: 1000 }))) {
      got.push(r.seq);
      if (got.length === 2) break;
    }
    expect(got).toEqual([0, 1]);
    // The interceptor's call ended with the caller's break, and the connection is still usable.
    expect(text((await s.echo.unary(req({ payload: bytes("after") }))).payload)).toBe("after");
    expect(finished).toBe(true);
  });
});
