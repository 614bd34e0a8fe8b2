// Interceptors and the same-user handshaker against the real Go ttrpc (containerd/ttrpc,
// via test/interop/go): the Go client is served by our server guarded by
// requireSameUser() and wrapped by an interceptor, and our client's interceptors put
// metadata on the wire that the Go server receives. If the Go peer cannot be built,
// every test here fails.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Client, type PeerCredentials, requireSameUser, Server, type ServiceClient, TtrpcError } from "../../src/ttrpc/index.ts";
import { echoService } from "../support/echo-service.ts";
import { buildPeer, runGoCase, type ServerProcess, startGoServer } from "../support/go-peer.ts";
import { tempDir } from "../support/tmp.ts";
import { EchoDefinition, EchoRequest } from "./gen/echo.ts";

const dir = tempDir();
afterAll(() => dir.cleanup());

describe("Go client → our server with requireSameUser and an interceptor", () => {
  const sock = join(dir.path, "guarded.sock");
  const seen: { method: string; peer: PeerCredentials }[] = [];
  const server = new Server({
    handshaker: requireSameUser(),
    interceptors: [
      async (call, next) => {
        seen.push({ method: call.method, peer: call.ctx.handshake as PeerCredentials });
        try {
          return await next(call);
        } catch (e) {
          if (e instanceof TtrpcError) throw new TtrpcError(e.code, `intercepted: ${e.message}`);
          throw e;
        }
      },
    ],
  }).register(EchoDefinition, echoService);

  beforeAll(async () => {
    await buildPeer();
    server.listen(sock);
  }, 600_000);
  afterAll(() => server.close());

  test("a Go client of our uid is served; the interceptor sees its credentials", async () => {
    seen.length = 0;
    expect(await runGoCase(sock, "unary")).toEqual({
      payload: "hello",
      seq: 0,
      metadata: [
        { key: "k1", value: "a" },
        { key: "k1", value: "b" },
        { key: "k2", value: "c" },
      ],
    });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.method).toBe("Unary");
    expect(seen[0]!.peer.uid).toBe(process.geteuid!());
    expect(seen[0]!.peer.gid).toBe(process.getegid!());
    expect(seen[0]!.peer.pid).not.toBe(process.pid); // the Go process
  }, 60_000);

  test("a server stream passes the interceptor", async () => {
    seen.length = 0;
    expect(await runGoCase(sock, "server-stream")).toEqual({ seqs: [0, 1, 2, 3, 4], payloads: ["x", "x", "x", "x", "x"] });
    expect(seen.map((s) => s.method)).toEqual(["ServerStream"]);
  }, 60_000);

  test("the status the interceptor throws is what the Go client gets", async () => {
    expect(await runGoCase(sock, "error")).toEqual({ code: 5, message: "intercepted: no such thing", source: "status" });
  }, 60_000);
});

describe("our client with interceptors → Go server", () => {
  const sock = join(dir.path, "go.sock");
  let goServer: ServerProcess | null = null;
  let client: Client | null = null;
  let echo: ServiceClient<typeof EchoDefinition>;
  const methods: string[] = [];

  beforeAll(async () => {
    await buildPeer();
    goServer = await startGoServer(sock);
    client = await Client.connect(sock, {
      timeoutMs: 5000,
      interceptors: [
        async (call, next) => {
          methods.push(call.method);
          return next({ ...call, options: { ...call.options, metadata: { ...call.options.metadata, "x-trace": "t-1" } } });
        },
      ],
    });
    echo = client.service(EchoDefinition);
  }, 600_000);
  afterAll(async () => {
    client?.close();
    if (goServer !== null) expect(await goServer.stop()).toBe(0);
  });

  test("metadata added by the interceptor reaches the Go server, unary and streaming", async () => {
    const r = await echo.unary(EchoRequest.fromPartial({ payload: new TextEncoder().encode("u") }), { metadata: { mine: "1" } });
    expect(r.metadata).toEqual([
      { key: "mine", value: "1" },
      { key: "x-trace", value: "t-1" },
    ]);
    const streamed: string[][] = [];
    for await (const m of echo.serverStream(EchoRequest.fromPartial({ payload: new Uint8Array([1]), repeat: 2 }))) {
      streamed.push(m.metadata.map((kv) => `${kv.key}=${kv.value}`));
    }
    expect(streamed).toEqual([["x-trace=t-1"], ["x-trace=t-1"]]);
    expect(methods).toEqual(["Unary", "ServerStream"]);
  });
});
