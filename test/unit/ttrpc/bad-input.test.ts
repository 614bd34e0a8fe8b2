// What a broken or hostile client can do to our server: each bad frame is answered
// with the Go library's code on its own stream, or costs only its own connection.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { encodeFrame, writeHeader } from "../../../src/ttrpc/frame.ts";
import { Client, Code } from "../../../src/ttrpc/index.ts";
import { EchoDefinition, EchoRequest } from "../../interop/gen/echo.ts";
import { RawPeer } from "../../support/raw-peer.ts";
import { tempDir } from "../../support/tmp.ts";

const SERVICE = "bunwasi.interop.v1.Echo";
const dir = tempDir();
const sock = join(dir.path, "echo.sock");
let server: Bun.Subprocess<"ignore", "pipe", "inherit">;

const echoPayload = (p: Partial<EchoRequest>) => EchoRequest.encode(EchoRequest.fromPartial(p)).finish();

beforeAll(async () => {
  // A server in its own process, so its memory can be watched apart from the test's.
  server = Bun.spawn([process.execPath, join(import.meta.dir, "../../support/echo-server.ts"), sock], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = server.stdout.getReader();
  const { value } = await reader.read();
  expect(new TextDecoder().decode(value)).toContain("READY");
  reader.releaseLock();
});
afterAll(() => {
  server.kill();
  dir.cleanup();
});

function rssKiB(pid: number): number {
  const status = require("node:fs").readFileSync(`/proc/${pid}/status`, "utf8") as string;
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}

describe("stream ids", () => {
  test("an even stream id is refused with INVALID_ARGUMENT on that id", async () => {
    const p = await RawPeer.connect(sock);
    p.request(2, { service: SERVICE, method: "Unary", payload: echoPayload({}) });
    const a = await p.answer(2);
    expect(a.code).toBe(Code.INVALID_ARGUMENT);
    expect(a.message).toContain("odd");
    p.close();
  });

  test("a reused or lower id is refused; the next higher id still works", async () => {
    const p = await RawPeer.connect(sock);
    p.request(5, { service: SERVICE, method: "Unary", payload: echoPayload({ payload: new Uint8Array([1]) }) });
    expect((await p.answer(5)).code).toBe(0);
    p.answers.length = 0;
    p.request(3, { service: SERVICE, method: "Unary", payload: echoPayload({}) });
    const a = await p.answer(3);
    expect(a.code).toBe(Code.INVALID_ARGUMENT);
    expect(a.message).toContain("re-used");
    p.request(7, { service: SERVICE, method: "Unary", payload: echoPayload({}) });
    expect((await p.answer(7)).code).toBe(0);
    p.close();
  });

  test("data on a stream that is not open is refused", async () => {
    const p = await RawPeer.connect(sock);
    p.send(encodeFrame(9, 3, 0, new Uint8Array([0x0a, 0x00])));
    const a = await p.answer(9);
    expect(a.code).toBe(Code.INVALID_ARGUMENT);
    p.close();
  });
});

describe("payloads", () => {
  test("a request that is not protobuf is INVALID_ARGUMENT", async () => {
    const p = await RawPeer.connect(sock);
    p.send(encodeFrame(1, 1, 0, new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff])));
    const a = await p.answer(1);
    expect(a.code).toBe(Code.INVALID_ARGUMENT);
    expect(a.message).toContain("unmarshal request");
    p.close();
  });

  test("a method payload that is not protobuf is INVALID_ARGUMENT", async () => {
    const p = await RawPeer.connect(sock);
    p.request(1, { service: SERVICE, method: "Unary", payload: new Uint8Array([0x0a, 0xff, 0xff]) });
    const a = await p.answer(1);
    expect(a.code).toBe(Code.INVALID_ARGUMENT);
    p.close();
  });

  test("an oversize frame is discarded and answered RESOURCE_EXHAUSTED; the connection goes on", async () => {
    const p = await RawPeer.connect(sock);
    const len = (4 << 20) + 1;
    const frame = new Uint8Array(10 + len);
    writeHeader(frame, 0, len, 1, 1, 0);
    p.send(frame);
    const a = await p.answer(1);
    expect(a.code).toBe(Code.RESOURCE_EXHAUSTED);
    p.request(3, { service: SERVICE, method: "Unary", payload: echoPayload({ payload: new Uint8Array([7]) }) });
    const b = await p.answer(3);
    expect(b.code).toBe(0);
    expect(EchoRequest.decode(b.payload).payload).toEqual(new Uint8Array([7]));
    p.close();
  });

  test("unknown frame types are ignored", async () => {
    const p = await RawPeer.connect(sock);
    p.send(encodeFrame(1, 9, 0, new Uint8Array([1, 2, 3])));
    p.send(encodeFrame(3, 2, 0, new Uint8Array([1, 2, 3])));
    p.request(5, { service: SERVICE, method: "Unary", payload: echoPayload({}) });
    expect((await p.answer(5)).code).toBe(0);
    expect(p.answers.map((a) => a.streamId)).toEqual([5]);
    p.close();
  });

  test("the server enforces timeout_nano by itself", async () => {
    const p = await RawPeer.connect(sock);
    // A raw peer has no timer of its own, and the handler sleeps ten minutes (past the test's
    // timeout): an answer at all, with this code and message, is the server's deadline.
    const t0 = performance.now();
    p.request(1, { service: SERVICE, method: "Unary", payload: echoPayload({ sleepMs: 600_000 }), timeoutNano: 150e6 });
    const a = await p.answer(1, 60_000); // liveness only
    console.log(`timeout_nano 150 ms → answer after ${(performance.now() - t0).toFixed(0)} ms (printed, not asserted)`);
    expect(a.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(a.message).toBe("context deadline exceeded");
    p.close();
  });
});

describe("fuzz", () => {
  test("random, truncated and garbage frames never break the server or a good client", async () => {
    const good = await Client.connect(sock);
    const echo = good.service(EchoDefinition);
    let seed = 0x9e3779b9;
    const rand = () => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) / 0x1_0000_0000;
    };
    const randBytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
    const rss0 = rssKiB(server.pid);
    let goodCalls = 0;
    const goodLoop = (async () => {
      for (let i = 0; i < 300; i++) {
        const r = await echo.unary(EchoRequest.fromPartial({ payload: new TextEncoder().encode(`g${i}`) }));
        expect(new TextDecoder().decode(r.payload)).toBe(`g${i}`);
        goodCalls++;
      }
    })();
    for (let round = 0; round < 60; round++) {
      const p = await RawPeer.connect(sock);
      for (let k = 0; k < 20; k++) {
        const kind = Math.floor(rand() * 6);
        const id = Math.floor(rand() * 64);
        if (kind === 0)
          p.send(randBytes(1 + Math.floor(rand() * 200))); // pure garbage
        else if (kind === 1)
          p.send(encodeFrame(id, 1 + Math.floor(rand() * 4), Math.floor(rand() * 8), randBytes(Math.floor(rand() * 300))));
        else if (kind === 2) p.request(id, { service: SERVICE, method: "Unary", payload: randBytes(Math.floor(rand() * 64)) });
        else if (kind === 3)
          p.request(
            id,
            { service: SERVICE, method: ["ClientStream", "Bidi", "ServerStream"][k % 3]!, payload: randBytes(8) },
            Math.floor(rand() * 4),
          );
        else if (kind === 4) p.send(encodeFrame(id, 3, Math.floor(rand() * 8), randBytes(Math.floor(rand() * 40))));
        else p.send(encodeFrame(id, 1, 0, randBytes(100)).subarray(0, 5 + Math.floor(rand() * 50))); // truncated
      }
      await Bun.sleep(2);
      p.close();
    }
    await goodLoop;
    expect(goodCalls).toBe(300);
    Bun.gc(true);
    await Bun.sleep(200);
    const grown = rssKiB(server.pid) - rss0;
    // 60 connections of junk must not leave the server holding memory for them.
    expect(grown).toBeLessThan(64 * 1024);
    // And it still answers new connections.
    const again = await Client.connect(sock);
    const r = await again.service(EchoDefinition).unary(EchoRequest.fromPartial({ payload: new Uint8Array([42]) }));
    expect(r.payload).toEqual(new Uint8Array([42]));
    again.close();
    good.close();
  }, 60_000);
});
