// src/linux/netns.ts: socket addresses as runwasi's setting writes them, and listening
// sockets made here (the daemon's own namespace) or in a namespace that does not exist.
import { describe, expect, test } from "bun:test";
import { closeSync, readlinkSync } from "node:fs";
import { listenTcp, sockaddrOf } from "../../../src/linux/netns.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("sockaddrOf", () => {
  test("IPv4: family, port in network order, address", () => {
    const { family, bytes } = sockaddrOf("10.1.2.3:8080");
    expect(family).toBe(2);
    expect(hex(bytes)).toBe("0200" + "1f90" + "0a010203" + "0000000000000000");
  });

  test("IPv6: any, loopback, a full address, a dotted tail", () => {
    const v6 = (a: string) => hex(sockaddrOf(a).bytes.subarray(8, 24));
    expect(sockaddrOf("[::]:80").family).toBe(10);
    expect(hex(sockaddrOf("[::]:80").bytes.subarray(0, 8))).toBe("0a00" + "0050" + "00000000");
    expect(v6("[::]:80")).toBe("0".repeat(32));
    expect(v6("[::1]:80")).toBe(`${"0".repeat(30)}01`);
    expect(v6("[2001:db8:0:1:2:3:4:5]:1")).toBe("20010db8000000010002000300040005");
    expect(v6("[fe80::1:2]:1")).toBe("fe800000000000000000000000010002");
    expect(v6("[::ffff:10.1.2.3]:1")).toBe("00000000000000000000ffff0a010203");
  });

  test("anything else is refused, naming the value", () => {
    for (const bad of ["8080", "localhost:80", "1.2.3:80", "1.2.3.4:99999", "[::1]", "::1:80", "[zz::1]:80", "1.2.3.4:"]) {
      expect(() => sockaddrOf(bad)).toThrow(JSON.stringify(bad));
    }
  });
});

describe("listenTcp", () => {
  test("in this thread's namespace: a socket that accepts connections", async () => {
    // A port of our own first, so the address is known.
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = probe.port;
    probe.stop(true);
    const fd = listenTcp(`127.0.0.1:${port}`, 4);
    try {
      const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
      s.end();
      // Bound and listening: a second bind of the port fails.
      expect(() => listenTcp(`127.0.0.1:${port}`, 4)).toThrow(`bind 127.0.0.1:${port}: Address already in use`);
    } finally {
      closeSync(fd);
    }
  });

  test("a network namespace path that does not exist: a clear error, nothing switched", () => {
    const before = readlinkSync("/proc/thread-self/ns/net");
    expect(() => listenTcp("127.0.0.1:0", 4, "/var/run/netns/bunwasi-no-such-ns")).toThrow(
      "network namespace /var/run/netns/bunwasi-no-such-ns: ",
    );
    expect(readlinkSync("/proc/thread-self/ns/net")).toBe(before);
  });
});
