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

test("shutdown: no new connections, calls in flight finish, then it resolves", async () => {
  const sock = join(dir.path, "graceful.sock");
  const server = new Server().register(EchoDefinition, echoService);
  server.listen(sock);
  const client = await Client.connect(sock);
  const echo = client.service(EchoDefinition);
  const slow = echo.unary(EchoRequest.fromPartial({ payload: new Uint8Array([1]), sleepMs: 300 }));
  await Bun.sleep(20); // the call is in flight
  let done = false;
  const stopped = server.shutdown().then(() => (done = true));
  await Bun.sleep(20);
  expect(
    await Client.connect(sock).then(
      () => "connected",
      () => "refused",
    ),
  ).toBe("refused");
  expect(done).toBe(false);
  const r = await slow;
  expect(r.payload).toEqual(new Uint8Array([1]));
  await stopped;
  await client.closed;
  expect(server.connectionCount).toBe(0);
});

test("shutdown with a grace period closes what will not finish", async () => {
  const sock = join(dir.path, "grace.sock");
  const server = new Server().register(EchoDefinition, echoService);
  server.listen(sock);
  const client = await Client.connect(sock);
  const stuck = client.service(EchoDefinition).unary(EchoRequest.fromPartial({ sleepMs: 60_000 }));
  await Bun.sleep(20);
  const t0 = performance.now();
  await server.shutdown(200);
  expect(performance.now() - t0).toBeLessThan(1000);
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
