// Flow control on the server: a client stream whose handler does not read yet makes the
// server stop reading that connection (the client's writes back up) instead of buffering
// whatever is sent; once the handler reads, everything arrives.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { encodeFrame } from "../../../src/ttrpc/frame.ts";
import { Server } from "../../../src/ttrpc/index.ts";
import { EchoDefinition, EchoRequest, EchoResponse } from "../../interop/gen/echo.ts";
import { RawPeer } from "../../support/raw-peer.ts";
import { tempDir } from "../../support/tmp.ts";

const dir = tempDir();
afterAll(() => dir.cleanup());

test("an unread client stream holds the connection's reading, then drains", async () => {
  const sock = join(dir.path, "flow.sock");
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const server = new Server().register(EchoDefinition, {
    async clientStream(reqs) {
      await gate;
      let n = 0;
      for await (const _ of reqs) n++;
      return EchoResponse.fromPartial({ seq: n });
    },
  });
  server.listen(sock);
  const p = await RawPeer.connect(sock);
  p.request(1, { service: "bunwasi.interop.v1.Echo", method: "ClientStream" }, 0x2);
  const msg = EchoRequest.encode(EchoRequest.fromPartial({ payload: new Uint8Array(1 << 20) })).finish();
  const N = 64;
  for (let i = 0; i < N; i++) p.send(encodeFrame(1, 3, 0, msg));
  p.send(encodeFrame(1, 3, 0x5, new Uint8Array()));
  await Bun.sleep(500);
  // The server took about its limit (16 MiB) plus socket buffers, and left the rest with us.
  expect(p.pending).toBeGreaterThan(32 << 20);
  open();
  const a = await p.answer(1, 20_000);
  expect(a.code).toBe(0);
  expect(EchoResponse.decode(a.payload).seq).toBe(N);
  expect(p.pending).toBe(0);
  p.close();
  server.close();
}, 30_000);
