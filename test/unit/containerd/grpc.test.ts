// src/containerd/grpc.ts against a gRPC server made here with node:http2 on a unix socket:
// messages split across DATA frames and several in one, the status in trailers or in the
// headers alone (trailers-only), percent-encoded messages, metadata as headers, server
// streams, a bidirectional stream, and a deadline. test/e2e/artifacts.test.ts runs the
// client against real containerds.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  InfoRequest,
  InfoResponse,
  ReadContentRequest,
  ReadContentResponse,
  WriteContentRequest,
  WriteContentResponse,
} from "../../../src/containerd/gen/containerd/services/content/v1/content.ts";
import { GrpcClient, GrpcCode, GrpcError, type MethodDefinition, type ServiceDefinition } from "../../../src/containerd/grpc.ts";

const dir = mkdtempSync(join(tmpdir(), "bunwasi-grpc-"));
const socket = join(dir, "s.sock");
let server: Http2Server;
const seen: IncomingHttpHeaders[] = [];

function frame(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + bytes.length);
  new DataView(out.buffer).setUint32(1, bytes.length);
  out.set(bytes, 5);
  return out;
}

/** The gRPC messages in a request body. */
function messages(body: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let off = 0; off + 5 <= body.length; ) {
    const len = new DataView(body.buffer, body.byteOffset + off).getUint32(1);
    out.push(body.subarray(off + 5, off + 5 + len));
    off += 5 + len;
  }
  return out;
}

function ok(stream: ServerHttp2Stream, body: Uint8Array[], status = "0", message = ""): void {
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": status, ...(message ? { "grpc-message": message } : {}) }));
  for (const b of body) stream.write(b);
  stream.end();
}

const handlers: Record<string, (stream: ServerHttp2Stream, body: Uint8Array) => void> = {
  "/t.Content/Info": (stream, body) => {
    const req = InfoRequest.decode(messages(body)[0] as Uint8Array);
    if (req.digest === "missing") {
      // Trailers-only: the status in the one HEADERS frame.
      stream.respond(
        { ":status": 200, "content-type": "application/grpc", "grpc-status": "5", "grpc-message": "content%20missing%3A%20not%20found" },
        { endStream: true },
      );
      return;
    }
    if (req.digest === "hang") return;
    const res = frame(InfoResponse.encode({ info: { digest: req.digest, size: 42, labels: { a: "b" } } }).finish());
    // Split mid-message, as DATA frames may be.
    ok(stream, [res.subarray(0, 3), res.subarray(3, 9), res.subarray(9)]);
  },
  "/t.Content/Read": (stream) => {
    const parts = [0, 1, 2].map((i) => frame(ReadContentResponse.encode({ offset: i * 2, data: new Uint8Array([i, i]) }).finish()));
    // Two messages in one write, then one.
    const joined = new Uint8Array((parts[0] as Uint8Array).length + (parts[1] as Uint8Array).length);
    joined.set(parts[0] as Uint8Array);
    joined.set(parts[1] as Uint8Array, (parts[0] as Uint8Array).length);
    ok(stream, [joined, parts[2] as Uint8Array]);
  },
};

beforeAll(async () => {
  server = createServer();
  server.on("stream", (s, headers) => {
    const stream = s as ServerHttp2Stream;
    seen.push(headers);
    const path = String(headers[":path"]);
    if (path === "/t.Content/Write") {
      // Bidirectional: answer each request as it arrives, with its offset + data length.
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      let pending = new Uint8Array(0);
      stream.on("data", (chunk: Uint8Array) => {
        const all = new Uint8Array(pending.length + chunk.length);
        all.set(pending);
        all.set(chunk, pending.length);
        let off = 0;
        while (off + 5 <= all.length) {
          const len = new DataView(all.buffer, all.byteOffset + off).getUint32(1);
          if (off + 5 + len > all.length) break;
          const req = WriteContentRequest.decode(all.subarray(off + 5, off + 5 + len));
          stream.write(
            frame(
              WriteContentResponse.encode({
                action: req.action,
                offset: req.offset + req.data.length,
                total: req.total,
                digest: req.expected,
              }).finish(),
            ),
          );
          off += 5 + len;
        }
        pending = all.slice(off);
      });
      stream.on("end", () => stream.end());
      return;
    }
    const chunks: Uint8Array[] = [];
    stream.on("data", (c: Uint8Array) => chunks.push(c));
    stream.on("end", () => {
      const body = new Uint8Array(Buffer.concat(chunks));
      const h = handlers[path];
      if (h) h(stream, body);
      else ok(stream, [], String(GrpcCode.UNIMPLEMENTED), "unknown%20method");
    });
  });
  await new Promise<void>((r) => server.listen(socket, r));
});

afterAll(() => {
  server?.close();
  rmSync(dir, { recursive: true, force: true });
});

const service: ServiceDefinition = { fullName: "t.Content", methods: {} };
const method = <Req, Res>(name: string, requestType: any, responseType: any, requestStream = false, responseStream = false) =>
  ({ name, requestType, responseType, requestStream, responseStream }) as MethodDefinition<Req, Res>;
const info = method<InfoRequest, InfoResponse>("Info", InfoRequest, InfoResponse);

describe("GrpcClient", () => {
  test("unary: a response split across DATA frames; metadata arrive as headers", async () => {
    const c = new GrpcClient(socket);
    const r = await c.unary(service, info, { digest: "sha256:x" }, { "containerd-namespace": "ns1" });
    expect(r.info).toEqual({ digest: "sha256:x", size: 42, labels: { a: "b" } });
    const h = seen.at(-1) as IncomingHttpHeaders;
    expect(h["containerd-namespace"]).toBe("ns1");
    expect(h["content-type"]).toBe("application/grpc");
    expect(h.te).toBe("trailers");
    c.close();
  });

  test("a trailers-only error: code and the decoded message", async () => {
    const c = new GrpcClient(socket);
    const e = await c.unary(service, info, { digest: "missing" }).catch((x) => x);
    expect(e).toBeInstanceOf(GrpcError);
    expect(e.code).toBe(GrpcCode.NOT_FOUND);
    expect(e.details).toBe("content missing: not found");
    const u = await c.unary(service, method<InfoRequest, InfoResponse>("Nope", InfoRequest, InfoResponse), { digest: "" }).catch((x) => x);
    expect(u.code).toBe(GrpcCode.UNIMPLEMENTED);
    c.close();
  });

  test("a server stream: every message in order, two of them in one DATA frame", async () => {
    const c = new GrpcClient(socket);
    const got: number[] = [];
    for await (const m of c.serverStream(
      service,
      method<ReadContentRequest, ReadContentResponse>("Read", ReadContentRequest, ReadContentResponse, false, true),
      {
        digest: "d",
        offset: 0,
        size: 0,
      },
    ))
      got.push(m.offset, ...m.data);
    expect(got).toEqual([0, 0, 0, 2, 1, 1, 4, 2, 2]);
    c.close();
  });

  test("a bidirectional stream: each request answered before the next is sent", async () => {
    const c = new GrpcClient(socket);
    const call = c.call(
      service,
      method<WriteContentRequest, WriteContentResponse>("Write", WriteContentRequest, WriteContentResponse, true, true),
    );
    const base = { action: 1, ref: "r", total: 10, expected: "", offset: 0, data: new Uint8Array(0), labels: {} };
    call.send({ ...base, offset: 0, data: new Uint8Array(4) });
    expect((await call.recv())?.offset).toBe(4);
    call.send({ ...base, offset: 4, data: new Uint8Array(6) });
    expect((await call.recv())?.offset).toBe(10);
    call.send({ ...base, action: 2, offset: 10, expected: "sha256:e" });
    expect((await call.recv())?.digest).toBe("sha256:e");
    call.end();
    expect(await call.recv()).toBeUndefined();
    c.close();
  });

  test("no answer within the deadline: DEADLINE_EXCEEDED, and the client still works", async () => {
    const c = new GrpcClient(socket, { timeoutMs: 200 });
    const e = await c.unary(service, info, { digest: "hang" }).catch((x) => x);
    expect(e.code).toBe(GrpcCode.DEADLINE_EXCEEDED);
    expect((await c.unary(service, info, { digest: "again" })).info?.digest).toBe("again");
    c.close();
  });

  test("nothing listening: UNAVAILABLE", async () => {
    const c = new GrpcClient(join(dir, "nobody.sock"));
    const e = await c.unary(service, info, { digest: "x" }).catch((x) => x);
    expect(e).toBeInstanceOf(GrpcError);
    expect(e.code).toBe(GrpcCode.UNAVAILABLE);
    c.close();
  });
});
