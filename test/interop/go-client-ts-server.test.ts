// The real Go ttrpc client (containerd/ttrpc, via test/interop/go) against our server,
// running as a process of its own. Every Go client scenario must observe what it
// observes against the Go server (see test/interop/go/README.md). If the Go peer
// cannot be built, every test here fails.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { buildPeer, runGoCase, type ServerProcess, startTsServer } from "../support/go-peer.ts";
import { tempDir } from "../support/tmp.ts";

const dir = tempDir();
const sock = join(dir.path, "ts.sock");
let server: ServerProcess | null = null;
let setupError: unknown = null;

beforeAll(async () => {
  try {
    await buildPeer();
    server = await startTsServer(sock);
  } catch (e) {
    setupError = e;
  }
}, 600_000);

afterAll(async () => {
  await server?.stop();
  dir.cleanup();
});

/** Runs one Go client case against our server; throws (failing the test) if setup failed. */
async function goCase(name: string): Promise<Record<string, any>> {
  if (setupError !== null) throw setupError;
  return runGoCase(sock, name);
}

const MAX = 4 << 20;

describe("Go client → our server", () => {
  test("unary echoes payload and multi-valued metadata", async () => {
    expect(await goCase("unary")).toEqual({
      payload: "hello",
      seq: 0,
      metadata: [
        { key: "k1", value: "a" },
        { key: "k1", value: "b" },
        { key: "k2", value: "c" },
      ],
    });
  });

  test("3 MiB payload round-trips intact", async () => {
    expect(await goCase("unary-large")).toEqual({ len: 3 << 20, ok: true });
  });

  test("oversize request is refused by the Go client; the connection survives", async () => {
    const r = await goCase("oversize");
    expect(r.code).toBe(8);
    expect(r.source).toBe("status");
    expect(r.message).toMatch(
      new RegExp(`^rpc error: code = ResourceExhausted desc = message length \\d+ exceed maximum message size of ${MAX}$`),
    );
    expect(r.after).toBe("ok");
  });

  test("error status: code and message", async () => {
    expect(await goCase("error")).toEqual({ code: 5, message: "no such thing", source: "status" });
  });

  test("client deadline: a 200 ms timeout against a 2 s sleep is DEADLINE_EXCEEDED, connection survives", async () => {
    const r = await goCase("deadline");
    console.log(`go client deadline case: ${r.elapsed_ms} ms (printed, not asserted)`);
    // Client timer and server timer race: the source may be either; the code may not.
    expect(r.code).toBe(4);
    expect(["status", "context"]).toContain(r.source);
    expect(r.after).toBe("ok");
  });

  test("server enforces timeout_nano on its own", async () => {
    const r = await goCase("deadline-server");
    console.log(`go client deadline-server case: ${r.elapsed_ms} ms (printed, not asserted)`);
    // A status answer (not the Go client's own context) with the server's message: our
    // server's deadline timer ended the 2 s sleep.
    expect(r.code).toBe(4);
    expect(r.message).toBe("context deadline exceeded");
    expect(r.source).toBe("status");
    expect(r.after).toBe("ok");
  });

  test("the server sees the client's 5 s deadline", async () => {
    const r = await goCase("deadline-seen");
    expect(Object.keys(r)).toEqual(["deadline_left_nano"]);
    console.log(`deadline left when the handler ran: ${r.deadline_left_nano} ns of 5e9 (printed; the rest is transit time)`);
    // A deadline arrived (no deadline reads as 0) and it is not later than the one sent.
    expect(r.deadline_left_nano).toBeGreaterThan(0);
    expect(r.deadline_left_nano).toBeLessThanOrEqual(5_000_000_000);
  });

  test("unknown service is UNIMPLEMENTED with Go's message", async () => {
    expect(await goCase("unknown-service")).toEqual({ code: 12, message: "service no.such.Service", source: "status", after: "ok" });
  });

  test("unknown method is UNIMPLEMENTED with Go's message", async () => {
    expect(await goCase("unknown-method")).toEqual({ code: 12, message: "method Nope", source: "status", after: "ok" });
  });

  test("client streaming", async () => {
    expect(await goCase("client-stream")).toEqual({ payload: "abc", seq: 3 });
  });

  test("server streaming", async () => {
    expect(await goCase("server-stream")).toEqual({ seqs: [0, 1, 2, 3, 4], payloads: ["x", "x", "x", "x", "x"] });
  });

  test("bidirectional lock-step, then a clean end", async () => {
    expect(await goCase("bidi")).toEqual({
      payloads: ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"],
      seqs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      end: "eof",
    });
  });

  test("1000 concurrent calls on one connection", async () => {
    const r = await goCase("concurrent");
    expect(r.first_error).toBeUndefined();
    expect(r).toMatchObject({ ok: 1000, mismatched: 0, errors: 0 });
    console.log(`1000 concurrent calls: ${r.elapsed_ms} ms (printed, not asserted)`);
  });

  test("raw oversize frame: RESOURCE_EXHAUSTED on its stream, connection survives", async () => {
    expect(await goCase("oversize-raw")).toEqual({
      type: 2,
      stream_id: 1,
      code: 8,
      message: `message length ${5 << 20} exceed maximum message size of ${MAX}`,
      closed: false,
      after: "ok",
    });
  });

  test("data frame on a never-opened stream: INVALID_ARGUMENT, connection survives", async () => {
    expect(await goCase("data-unknown-stream")).toEqual({
      type: 2,
      stream_id: 99,
      code: 3,
      message: "StreamID is no longer active",
      closed: false,
      after: "ok",
    });
  });

  test("our server is still up and quiet after all of it", async () => {
    if (setupError !== null) throw setupError;
    expect(server!.proc.exitCode).toBeNull();
    expect(server!.stderr()).toBe("");
  });
});
