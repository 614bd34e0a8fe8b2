// Stopping a server: shutdown() stops accepting, lets calls in flight finish and then
// closes; close() ends everything at once and callers learn it.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { Client, Code, Server, TtrpcError } from "../../../src/ttrpc/index.ts";
import { EchoDefinition, EchoRequest } from "../../interop/gen/echo.ts";
import { echoService } from "../../support/echo-service.ts";
import { tempDir } from "../../support/tmp.ts";

const dir = tempDir();
afterAll(() => dir.cleanup());

/** The echo server, plus a promise per call kind that resolves once a handler is running. */
function probedServer() {
  let unaryStarted!: () => void;
  let streamStarted!: () => void;
  const started = {
    unary: new Promise<void>((r) => {
      unaryStarted = r;
    }),
    stream: new Promise<void>((r) => {
      streamStarted = r;
    }),
  };
  const { unary, clientStream } = echoService;
  if (!unary || !clientStream) throw new Error("echo service without unary/clientStream");
  const server = new Server().register(EchoDefinition, {
    ...echoService,
    unary(req, ctx) {
      unaryStarted();
      return unary(req, ctx);
    },
    clientStream(reqs, ctx) {
      streamStarted();
      return clientStream(reqs, ctx);
    },
  });
  return { server, started };
}

test("shutdown: no new connections, calls in flight finish, then it resolves", async () => {
  const sock = join(dir.path, "graceful.sock");
  const { server, started } = probedServer();
  server.listen(sock);
  const client = await Client.connect(sock);
  const echo = client.service(EchoDefinition);
  // A client stream stays in flight until we end it: no sleep decides when the call finishes.
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  async function* requests() {
    yield EchoRequest.fromPartial({ payload: new Uint8Array([1]) });
    await gate;
    yield EchoRequest.fromPartial({ payload: new Uint8Array([2]) });
  }
  const inFlight = echo.clientStream(requests());
  await started.stream; // the call is in flight on the server
  let done = false;
  const stopped = server.shutdown().then(() => (done = true));
  expect(
    await Client.connect(sock).then(
      () => "connected",
      () => "refused",
    ),
  ).toBe("refused");
  expect(done).toBe(false); // the call cannot have finished: its stream is still open
  release();
  const r = await inFlight;
  expect(r.payload).toEqual(new Uint8Array([1, 2]));
  expect(r.seq).toBe(2);
  await stopped;
  await client.closed;
  expect(server.connectionCount).toBe(0);
});

test("shutdown with a grace period closes what will not finish", async () => {
  const sock = join(dir.path, "grace.sock");
  const { server, started } = probedServer();
  server.listen(sock);
  const client = await Client.connect(sock);
  // Sleeps for ten minutes, past the test's own timeout: shutdown(200) can only resolve by
  // closing it after the grace.
  const stuck = client.service(EchoDefinition).unary(EchoRequest.fromPartial({ sleepMs: 600_000 }));
  await started.unary;
  const t0 = performance.now();
  await server.shutdown(200);
  console.log(`shutdown(200) with a stuck call: ${(performance.now() - t0).toFixed(0)} ms (printed, not asserted)`);
  expect(server.connectionCount).toBe(0);
  const err = await stuck.catch((e) => e);
  expect(err).toBeInstanceOf(TtrpcError);
  expect(err.code).toBe(Code.UNAVAILABLE);
});

test("close: callers in flight fail with UNAVAILABLE at once", async () => {
  const sock = join(dir.path, "hard.sock");
  const server = new Server().register(EchoDefinition, echoService);
  server.listen(sock);
  const client = await Client.connect(sock);
  const pending = client.service(EchoDefinition).unary(EchoRequest.fromPartial({ sleepMs: 60_000 }));
  await Bun.sleep(20);
  server.close();
  const err = await pending.catch((e) => e);
  expect(err).toBeInstanceOf(TtrpcError);
  expect(err.code).toBe(Code.UNAVAILABLE);
  expect(client.isClosed).toBe(true);
});
