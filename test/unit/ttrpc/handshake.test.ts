// The server's handshaker: it runs per accepted connection before any frame is served,
// may refuse the connection, and what it returns reaches handlers as ctx.handshake.
// requireSameUser() checks the peer through SO_PEERCRED: a client of our own uid is
// served, a client running as nobody (a child process spawned with uid/gid 65534) is
// refused, and the server goes on serving others. These tests run as root.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  type AcceptedConnection,
  Client,
  Code,
  type PeerCredentials,
  peerCredentials,
  requireSameUser,
  Server,
  TtrpcError,
} from "../../../src/ttrpc/index.ts";
import { EchoDefinition, EchoRequest } from "../../interop/gen/echo.ts";
import { echoService } from "../../support/echo-service.ts";
import { tempDir } from "../../support/tmp.ts";

const NOBODY = 65534;
const dir = tempDir();
afterAll(() => dir.cleanup());
let n = 0;
const sockPath = () => join(dir.path, `h${n++}.sock`);

const req = (p: Partial<EchoRequest>) => EchoRequest.fromPartial(p);
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("handshaker", () => {
  test("runs before any frame is served; its result is every call's ctx.handshake", async () => {
    const sock = sockPath();
    const events: string[] = [];
    let release: () => void = () => {};
    const released = new Promise<void>((r) => (release = r));
    const server = new Server({
      handshaker: async (conn: AcceptedConnection) => {
        events.push(`handshake fd ${conn.fd >= 0}`);
        await released;
        events.push("accepted");
        return { who: "tester" };
      },
    }).register(EchoDefinition, {
      async unary(_r, ctx) {
        events.push("handler");
        return { payload: bytes(JSON.stringify(ctx.handshake)), seq: 0, metadata: [], deadlineLeftNano: 0 };
      },
    });
    server.listen(sock);
    const client = await Client.connect(sock);
    try {
      const answer = client.service(EchoDefinition).unary(req({ payload: bytes("early") }));
      // Let the request reach the server while the handshake is pending; it must wait.
      await Bun.sleep(50);
      expect(events).toEqual(["handshake fd true"]);
      release();
      const r = await answer;
      expect(JSON.parse(text(r.payload))).toEqual({ who: "tester" });
      expect(events).toEqual(["handshake fd true", "accepted", "handler"]);
    } finally {
      client.close();
      server.close();
    }
  });

  test("a refusal closes that connection unanswered, is reported, and others are still served", async () => {
    const sock = sockPath();
    const errors: unknown[] = [];
    let count = 0;
    const server = new Server({
      onError: (e) => errors.push(e),
      handshaker: () => {
        if (++count === 1) throw new TtrpcError(Code.PERMISSION_DENIED, "first one is refused");
        return undefined;
      },
    }).register(EchoDefinition, echoService);
    server.listen(sock);
    try {
      const refused = await Client.connect(sock);
      const err = await refused
        .service(EchoDefinition)
        .unary(req({}))
        .catch((e) => e);
      expect(err).toBeInstanceOf(TtrpcError);
      expect(err.code).toBe(Code.UNAVAILABLE);
      await refused.closed;
      expect(errors).toHaveLength(1);
      expect((errors[0] as TtrpcError).message).toBe("first one is refused");

      const ok = await Client.connect(sock);
      expect(text((await ok.service(EchoDefinition).unary(req({ payload: bytes("second") }))).payload)).toBe("second");
      ok.close();
    } finally {
      server.close();
    }
  });
});

describe("requireSameUser (SO_PEERCRED)", () => {
  // The other-user client is our echo-client.ts bundled into one file in a folder nobody
  // can read, so it needs nothing from the repository (which nobody may not reach).
  const shared = join(dir.path, "shared");
  let clientBundle = "";
  let bunForNobody = process.execPath;

  beforeAll(async () => {
    mkdirSync(shared);
    chmodSync(dir.path, 0o755);
    chmodSync(shared, 0o755);
    const out = await Bun.build({ entrypoints: [join(import.meta.dir, "fixtures/echo-client.ts")], outdir: shared, target: "bun" });
    if (!out.success) throw new AggregateError(out.logs, "bundling echo-client.ts failed");
    clientBundle = out.outputs[0]!.path;
    chmodSync(clientBundle, 0o644);
    // If nobody cannot execute our bun (it lives in a private home), give it a copy.
    const probe = Bun.spawnSync([bunForNobody, "--version"], { uid: NOBODY, gid: NOBODY, stdout: "ignore", stderr: "ignore" });
    if (probe.exitCode !== 0) {
      bunForNobody = join(shared, "bun");
      await Bun.write(bunForNobody, Bun.file(process.execPath));
      chmodSync(bunForNobody, 0o755);
    }
  });

  /** Runs the bundled client as `uid`; resolves to its JSON line. */
  async function clientAs(
    uid: number,
    sock: string,
  ): Promise<{ ok: boolean; uid: number; payload?: string; code?: number; message?: string }> {
    const proc = Bun.spawn([bunForNobody, clientBundle, sock], {
      uid,
      gid: uid,
      cwd: shared,
      env: { PATH: "/usr/bin:/bin", HOME: shared, BUN_RUNTIME_TRANSPILER_CACHE_PATH: "0" },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    if (code !== 0) throw new Error(`client as uid ${uid} exited ${code}: ${out}${err}`);
    return JSON.parse(out.trim().split("\n").at(-1)!);
  }

  test("our own uid is served, and handlers see the peer's credentials", async () => {
    const sock = sockPath();
    const server = new Server({ handshaker: requireSameUser() }).register(EchoDefinition, {
      async unary(_r, ctx) {
        return { payload: bytes(JSON.stringify(ctx.handshake)), seq: 0, metadata: [], deadlineLeftNano: 0 };
      },
    });
    server.listen(sock);
    const client = await Client.connect(sock);
    try {
      const r = await client.service(EchoDefinition).unary(req({}));
      const peer = JSON.parse(text(r.payload)) as PeerCredentials;
      expect(peer).toEqual({ pid: process.pid, uid: process.geteuid!(), gid: process.getegid!() });
    } finally {
      client.close();
      server.close();
    }
  });

  test("a client running as nobody is refused; the server keeps serving our own", async () => {
    const sock = sockPath();
    const errors: unknown[] = [];
    const server = new Server({ handshaker: requireSameUser(), onError: (e) => errors.push(e) }).register(EchoDefinition, echoService);
    server.listen(join(shared, "same-user.sock"));
    server.listen(sock);
    chmodSync(join(shared, "same-user.sock"), 0o777); // nobody may connect(2); the handshake is what refuses it
    try {
      const mine = await clientAs(process.geteuid!(), join(shared, "same-user.sock"));
      expect(mine).toEqual({ ok: true, uid: process.geteuid!(), payload: "hi" });

      const theirs = await clientAs(NOBODY, join(shared, "same-user.sock"));
      expect(theirs.ok).toBe(false);
      expect(theirs.uid).toBe(NOBODY);
      // Closed unanswered. The client sees that as its connection closing (UNAVAILABLE) or,
      // when the close (a reset, as its request was never read) beats Bun's connect
      // callback, as the connect failing with ECONNRESET.
      if (theirs.code !== Code.UNAVAILABLE) expect(theirs.message).toBe("Failed to connect ECONNRESET");
      expect(errors).toHaveLength(1);
      expect(errors[0]).toBeInstanceOf(TtrpcError);
      expect((errors[0] as TtrpcError).code).toBe(Code.PERMISSION_DENIED);
      expect((errors[0] as TtrpcError).message).toContain(`uid ${NOBODY}, gid ${NOBODY}`);

      // Still serving, on both of its sockets.
      const again = await clientAs(process.geteuid!(), join(shared, "same-user.sock"));
      expect(again.ok).toBe(true);
      const client = await Client.connect(sock);
      expect(text((await client.service(EchoDefinition).unary(req({ payload: bytes("still") }))).payload)).toBe("still");
      client.close();
    } finally {
      server.close();
    }
  });

  test("peerCredentials of a connected socket name the process on the other end", async () => {
    const sock = sockPath();
    let seen: PeerCredentials | null = null;
    const server = new Server({ handshaker: ({ fd }) => (seen = peerCredentials(fd)) }).register(EchoDefinition, echoService);
    server.listen(sock);
    const client = await Client.connect(sock);
    try {
      await client.service(EchoDefinition).unary(req({}));
      expect(seen!).toEqual({ pid: process.pid, uid: process.geteuid!(), gid: process.getegid!() });
      expect(() => peerCredentials(-1)).toThrow("no socket fd");
    } finally {
      client.close();
      server.close();
    }
  });
});
