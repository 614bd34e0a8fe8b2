// Serving a socket that is already bound and listening: one process binds the address
// (bindUnixSocket, which never replaces an existing socket, so of two racing binders
// exactly one wins) and a child serves the fd it inherits.
import { afterAll, expect, test } from "bun:test";
import { closeSync, existsSync, openSync } from "node:fs";
import { join } from "node:path";
import { bindUnixSocket, Client, Code, closeFd, Server } from "../../../src/ttrpc/index.ts";
import { EchoDefinition, EchoRequest } from "../../interop/gen/echo.ts";
import { echoService } from "../../support/echo-service.ts";
import { tempDir } from "../../support/tmp.ts";

const dir = tempDir();
afterAll(() => dir.cleanup());

const req = (p: Partial<EchoRequest>) => EchoRequest.fromPartial(p);
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

test("bindUnixSocket binds once: a second bind of the same path fails with EADDRINUSE", () => {
  const path = join(dir.path, "once.sock");
  const fd = bindUnixSocket(path);
  try {
    expect(fd).toBeGreaterThanOrEqual(0);
    expect(existsSync(path)).toBe(true);
    let err: any;
    try {
      closeFd(bindUnixSocket(path));
    } catch (e) {
      err = e;
    }
    expect(err?.code).toBe("EADDRINUSE");
  } finally {
    closeFd(fd);
  }
  expect(() => bindUnixSocket(join(dir.path, "x".repeat(120)))).toThrow("must be 1..107 bytes");
});

test("listen({ fd }) serves a socket bound beforehand; close() closes it and leaves the file to its binder", async () => {
  const path = join(dir.path, "inproc.sock");
  const server = new Server().register(EchoDefinition, echoService);
  server.listen({ fd: bindUnixSocket(path) });
  const client = await Client.connect(path);
  const r = await client.service(EchoDefinition).unary(req({ payload: bytes("fd") }), { metadata: { k: "v" } });
  expect(text(r.payload)).toBe("fd");
  expect(r.metadata).toEqual([{ key: "k", value: "v" }]);
  client.close();
  server.close();
  expect(existsSync(path)).toBe(true);
  expect(
    await Client.connect(path).then(
      () => "connected",
      () => "refused",
    ),
  ).toBe("refused");
});

test("listen({ fd }) refuses what is not a listening socket", () => {
  expect(() => new Server().listen({ fd: -1 })).toThrow(TypeError);
  const file = openSync(import.meta.path, "r");
  try {
    expect(() => new Server().listen({ fd: file })).toThrow(`cannot serve fd ${file}`);
  } finally {
    closeSync(file);
  }
});

test("a parent binds, a child serves the inherited fd 3, the parent's calls succeed", async () => {
  const path = join(dir.path, "handed.sock");
  const fd = bindUnixSocket(path);
  const child = Bun.spawn([process.execPath, join(import.meta.dir, "fixtures/fd-server.ts")], {
    stdio: ["ignore", "pipe", "inherit", fd],
  });
  // The child has its own copy now; ours would keep the socket alive after the child is gone.
  closeFd(fd);
  try {
    let first = "";
    const reader = child.stdout.getReader();
    while (!first.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      first += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    expect(first).toBe(`READY ${child.pid}\n`);

    const client = await Client.connect(path);
    const echo = client.service(EchoDefinition);
    expect(text((await echo.unary(req({ payload: bytes("from the child") }))).payload)).toBe("from the child");
    const seqs: number[] = [];
    for await (const r of echo.serverStream(req({ payload: bytes("s"), repeat: 3 }))) seqs.push(r.seq);
    expect(seqs).toEqual([0, 1, 2]);
    const err = await echo.unary(req({ failCode: Code.NOT_FOUND, failMessage: "none" })).catch((e) => e);
    expect(err.code).toBe(Code.NOT_FOUND);
    client.close();
  } finally {
    child.kill("SIGTERM");
    expect(await child.exited).toBe(0);
  }
  // The child held the only copy of the listening socket: with it gone, nobody answers.
  expect(
    await Client.connect(path).then(
      () => "connected",
      () => "refused",
    ),
  ).toBe("refused");
});
