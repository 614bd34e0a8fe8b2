// The shim's side of the runtime v2 binary protocol that needs no containerd: Go-style
// flags, socket addresses, and telling the two kinds of `start` stdin apart.
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { groupId, socketAddress } from "../../../src/runtime-v2/address.ts";
import { formatShimFlags, parseShimFlags } from "../../../src/runtime-v2/flags.ts";
import { bootstrapParams, startReply } from "../../../src/runtime-v2/reply.ts";
import { BootstrapParams, BootstrapResult } from "../../../src/task/gen/containerd/runtime/bootstrap/v1/bootstrap.ts";
import { Any } from "../../../src/task/gen/google/protobuf/any.ts";

describe("flags", () => {
  test("containerd's argv, in every spelling Go's flag package accepts", () => {
    const f = parseShimFlags([
      "-namespace",
      "k8s.io",
      "--address=/run/c.sock",
      "-publish-binary",
      "/usr/bin/containerd",
      "-id",
      "abc",
      "-debug",
      "start",
    ]);
    expect(f).toMatchObject({
      namespace: "k8s.io",
      address: "/run/c.sock",
      publishBinary: "/usr/bin/containerd",
      id: "abc",
      debug: true,
      rest: ["start"],
    });
    expect(parseShimFlags(["-id=x", "-debug=false", "delete"])).toMatchObject({ id: "x", debug: false, rest: ["delete"] });
  });

  test("an unknown flag or a missing value is an error, as in Go", () => {
    expect(() => parseShimFlags(["-bogus", "1"])).toThrow("flag provided but not defined: -bogus");
    expect(() => parseShimFlags(["-id"])).toThrow("flag needs an argument: -id");
  });

  test("format is the inverse of parse", () => {
    const f = parseShimFlags([
      "-namespace",
      "n",
      "-address",
      "a",
      "-publish-binary",
      "p",
      "-id",
      "i",
      "-bundle",
      "/b",
      "-socket",
      "unix:///s",
      "-debug",
      "serve",
    ]);
    expect(parseShimFlags([...formatShimFlags(f), "serve"])).toEqual(f);
  });
});

describe("socket address", () => {
  test("containerd's scheme: sha256 of address/namespace/group under /run/containerd/s", () => {
    const want = createHash("sha256").update("/run/containerd/containerd.sock/default/pod1").digest("hex");
    expect(socketAddress("/run/containerd/containerd.sock", "default", "pod1")).toBe(`unix:///run/containerd/s/${want}`);
  });

  test("containers of one pod share a group; a plain container is its own", () => {
    expect(groupId("c1", { "io.kubernetes.cri.sandbox-id": "pod1" })).toBe("pod1");
    expect(groupId("c1", { other: "x" })).toBe("c1");
    expect(groupId("c1", undefined)).toBe("c1");
  });

  test("a socket dir that makes the path too long is refused", () => {
    expect(() => socketAddress("/a", "ns", "g", `/${"d".repeat(60)}`)).toThrow("socket path too long");
  });
});

describe("start stdin", () => {
  const flags = parseShimFlags(["-namespace", "ns1", "-address", "/a", "-id", "c1", "start"]);

  test("BootstrapParams naming this task are used", () => {
    const bytes = BootstrapParams.encode(
      BootstrapParams.fromPartial({ instanceId: "c1", namespace: "ns1", containerdTtrpcAddress: "/a.ttrpc", socketDir: "/run/x" }),
    ).finish();
    expect(bootstrapParams(bytes, flags)).toMatchObject({ containerdTtrpcAddress: "/a.ttrpc", socketDir: "/run/x" });
  });

  test("a legacy Any of runtime options (or nothing, or junk) is not mistaken for them", () => {
    const any = Any.encode({ typeUrl: "containerd.runc.v1.Options", value: new Uint8Array([8, 1]) }).finish();
    expect(bootstrapParams(any, flags)).toBeNull();
    expect(bootstrapParams(new Uint8Array(), flags)).toBeNull();
    expect(bootstrapParams(new Uint8Array([0xff, 0xff, 0xff]), flags)).toBeNull();
  });
});

describe("start reply", () => {
  const address = "unix:///run/containerd/s/abc";
  const params = BootstrapParams.fromPartial({ instanceId: "c1", namespace: "ns1" });

  test("containerd 2.3+ (BootstrapParams on stdin) gets a BootstrapResult for task v3", () => {
    const out = startReply(address, params, {});
    expect(out).toBeInstanceOf(Uint8Array);
    expect(BootstrapResult.decode(out as Uint8Array)).toEqual({ version: 3, address, protocol: "ttrpc" });
  });

  test("1.7 to 2.2 (MAX_SHIM_VERSION set) get JSON version 2; 1.6 the plain address", () => {
    expect(JSON.parse(startReply(address, null, { MAX_SHIM_VERSION: "2" }) as string)).toEqual({ version: 2, address, protocol: "ttrpc" });
    expect(startReply(address, null, {})).toBe(address);
  });
});
