// The shim's side of the runtime v2 binary protocol that needs no containerd: Go-style
// flags, socket addresses, telling the two kinds of `start` stdin apart, and the command line
// both kinds of shim binary share (src/runtime-v2/shim-cli.ts) around a fake start and delete.
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { sharedModeFeatures } from "../../../src/daemon/thin-shim.ts";
import { groupId, socketAddress } from "../../../src/runtime-v2/address.ts";
import { formatShimFlags, parseShimFlags } from "../../../src/runtime-v2/flags.ts";
import { bootstrapParams, startReply } from "../../../src/runtime-v2/reply.ts";
import { runShimCli, type ShimBinary, type StartContext } from "../../../src/runtime-v2/shim-cli.ts";
import { Options as RuncOptions } from "../../../src/task/gen/containerd/runc/options/oci.ts";
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

  test("-h and -help are the help action in any spelling; they take no value", () => {
    for (const h of ["-h", "--h", "-help", "--help"]) expect(parseShimFlags([h]).rest).toEqual(["help"]);
    expect(parseShimFlags(["-id", "x", "-help", "start"])).toMatchObject({ id: "x", rest: ["help", "start"] });
    expect(() => parseShimFlags(["-hh"])).toThrow("flag provided but not defined: -hh");
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

  test("BootstrapParams naming this task are used", async () => {
    const bytes = BootstrapParams.encode(
      BootstrapParams.fromPartial({ instanceId: "c1", namespace: "ns1", containerdTtrpcAddress: "/a.ttrpc", socketDir: "/run/x" }),
    ).finish();
    expect(await bootstrapParams(bytes, flags)).toMatchObject({ containerdTtrpcAddress: "/a.ttrpc", socketDir: "/run/x" });
  });

  test("a legacy Any of runtime options (or nothing, or junk) is not mistaken for them", async () => {
    const any = Any.encode({ typeUrl: "containerd.runc.v1.Options", value: new Uint8Array([8, 1]) }).finish();
    expect(await bootstrapParams(any, flags)).toBeNull();
    expect(await bootstrapParams(new Uint8Array(), flags)).toBeNull();
    expect(await bootstrapParams(new Uint8Array([0xff, 0xff, 0xff]), flags)).toBeNull();
  });
});

describe("start reply", () => {
  const address = "unix:///run/containerd/s/abc";
  const params = BootstrapParams.fromPartial({ instanceId: "c1", namespace: "ns1" });

  test("containerd 2.3+ (BootstrapParams on stdin) gets a BootstrapResult for task v3", async () => {
    const out = await startReply(address, params, {});
    expect(out).toBeInstanceOf(Uint8Array);
    expect(BootstrapResult.decode(out as Uint8Array)).toEqual({ version: 3, address, protocol: "ttrpc" });
  });

  test("1.7 to 2.2 (MAX_SHIM_VERSION set) get JSON version 2; 1.6 the plain address", async () => {
    expect(JSON.parse((await startReply(address, null, { MAX_SHIM_VERSION: "2" })) as string)).toEqual({
      version: 2,
      address,
      protocol: "ttrpc",
    });
    expect(await startReply(address, null, {})).toBe(address);
  });
});

describe("the command line (runShimCli)", () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  function bundle(config: object | string = { ociVersion: "1.0.2" }): string {
    const dir = mkdtempSync(join(tmpdir(), "bw-cli-"));
    dirs.push(dir);
    writeFileSync(join(dir, "config.json"), typeof config === "string" ? config : JSON.stringify(config));
    return dir;
  }

  /** Runs one command line against a fake shim; what it printed, and what start and delete were asked. */
  async function run(argv: string[], o: { stdin?: Uint8Array; env?: Record<string, string>; cwd?: string; address?: string } = {}) {
    const starts: StartContext[] = [];
    const deletes: string[] = [];
    const out: (string | Uint8Array)[] = [];
    let err = "";
    const shim: ShimBinary = {
      binaryName: "containerd-shim-fake-v1",
      runtime: "io.containerd.fake.v1",
      description: "a fake shim",
      start: async (ctx) => {
        starts.push(ctx);
        return o.address ?? "unix:///run/fake.sock";
      },
      delete: async (flags) => {
        deletes.push(flags.id);
        return new Uint8Array([1, 2, 3]);
      },
      // Narrows as a shim may: keeps only the mount options it names.
      features: (f) => ({ ...f, mountOptions: (f.mountOptions ?? []).filter((m) => m === "rro") }),
    };
    const code = await runShimCli(argv, shim, {
      stdin: async () => o.stdin ?? new Uint8Array(),
      stdout: (b) => out.push(b),
      stderr: (s) => {
        err += s;
      },
      env: o.env ?? {},
      cwd: o.cwd ?? "/nonexistent",
    });
    return { code, out, err, starts, deletes };
  }

  const flags = ["-namespace", "ns1", "-address", "/run/c.sock", "-publish-binary", "/bin/c", "-id", "c1"];

  test("-v and -info answer without any other flag; -info reads its options and names the runtime", async () => {
    const v = await run(["-v"]);
    expect(v.code).toBe(0);
    expect(v.out.join("")).toMatch(/^containerd-shim-fake-v1 \(.+\)\n$/);
    const info = await run(["-info"], { stdin: new Uint8Array([10, 0]) });
    expect(info.code).toBe(0);
    // containerd.types.RuntimeInfo: field 1 (name), a string.
    const bytes = info.out[0] as Uint8Array;
    expect(bytes[0]).toBe(10);
    expect(new TextDecoder().decode(bytes.subarray(2, 2 + (bytes[1] as number)))).toBe("io.containerd.fake.v1");
  });

  test("-h, -help, --help and help print the usage on stdout and succeed, flags or not (Go's flag package knows -h and -help)", async () => {
    for (const argv of [["-h"], ["-help"], ["--help"], ["--h"], ["help"], [...flags, "-h"], ["-h", "start"]]) {
      const r = await run(argv);
      expect(r.code).toBe(0);
      expect(r.err).toBe("");
      const out = r.out.join("");
      expect(out).toStartWith("usage: containerd-shim-fake-v1 [-namespace NS");
      expect(out).toContain("containerd-shim-fake-v1 -info | -v | -h\n");
      expect(out).toEndWith("a fake shim\n");
      expect(r.starts.length + r.deletes.length).toBe(0);
    }
  });

  test("-info passes on the OCI runtime's features (the options' BinaryName, else BUNWASI_RUNTIME), narrowed by the shim", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bw-cli-"));
    dirs.push(dir);
    const runtime = (name: string, features: object | null) => {
      const path = join(dir, name);
      writeFileSync(
        path,
        features ? `#!/bin/sh\n[ "$1" = features ] && cat <<'EOF'\n${JSON.stringify(features)}\nEOF\n` : "#!/bin/sh\nexit 1\n",
        { mode: 0o755 },
      );
      return path;
    };
    const fromEnv = runtime("env-runc", { ociVersionMax: "1.0.2", mountOptions: ["ro", "rro"], linux: { namespaces: ["user"] } });
    const fromOptions = runtime("options-runc", { mountOptions: ["rbind"] });
    /** RuntimeInfo's field 4, google.protobuf.Any: its type URL and its value as JSON. */
    const features = (bytes: Uint8Array) => {
      const r = new BinaryReader(bytes);
      while (r.pos < r.len) {
        const [field, wire] = r.tag();
        if (field !== 4) {
          r.skip(wire);
          continue;
        }
        const any = Any.decode(r.bytes());
        return { typeUrl: any.typeUrl, value: JSON.parse(new TextDecoder().decode(any.value)) };
      }
      return null;
    };
    const env = { BUNWASI_RUNTIME: fromEnv };
    const a = await run(["-info"], { stdin: new Uint8Array(), env });
    expect(a.code).toBe(0);
    expect(features(a.out[0] as Uint8Array)).toEqual({
      typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/features/Features",
      value: { ociVersionMax: "1.0.2", mountOptions: ["rro"], linux: { namespaces: ["user"] } },
    });
    const options = Any.encode({
      typeUrl: "containerd.runc.v1.Options",
      value: RuncOptions.encode(RuncOptions.fromPartial({ binaryName: fromOptions })).finish(),
    }).finish();
    const b = await run(["-info"], { stdin: options, env });
    expect(features(b.out[0] as Uint8Array)?.value).toEqual({ mountOptions: [] });
    // A runtime without `features` (runc before 1.1): no features, as runc-v2 answers.
    const c = await run(["-info"], { stdin: new Uint8Array(), env: { BUNWASI_RUNTIME: runtime("old-runc", null) } });
    expect(c.code).toBe(0);
    expect(features(c.out[0] as Uint8Array)).toBeNull();
  });

  test("shared mode keeps runc's features but user namespaces (a wasm container's thread enters none)", () => {
    const runc = {
      mountOptions: ["ro", "rro"],
      linux: { namespaces: ["mount", "network", "user"], mountExtensions: { idmap: { enabled: true } } },
    };
    expect(sharedModeFeatures(runc)).toEqual({
      mountOptions: ["ro", "rro"],
      linux: { namespaces: ["mount", "network"], mountExtensions: { idmap: { enabled: true } } },
    });
    expect(sharedModeFeatures({ mountOptions: ["rro"] })).toEqual({ mountOptions: ["rro"] });
  });

  test("a bad flag, no action or an unknown one is refused with the usage (status 2)", async () => {
    for (const argv of [["-bogus", "start"], flags, [...flags, "serve-me"]]) {
      const r = await run(argv);
      expect(r.code).toBe(2);
      expect(r.err).toContain("usage: containerd-shim-fake-v1");
      expect(r.starts.length + r.deletes.length).toBe(0);
    }
  });

  test("start outside a bundle, or without a namespace, fails before the shim's start and writes nothing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bw-cli-"));
    dirs.push(dir);
    const r = await run([...flags, "start"], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${dir} is not a bundle (no config.json)`);
    expect(r.starts).toEqual([]);
    expect(existsSync(join(dir, "address"))).toBe(false);
    const b = bundle();
    const noNs = await run(["-id", "c1", "-address", "/run/c.sock", "start"], { cwd: b });
    expect(noNs.code).toBe(1);
    expect(noNs.err).toContain("-namespace is required");
    expect(noNs.starts).toEqual([]);
  });

  test("start: the bundle is the cwd, the pod is the CRI sandbox id, events go to TTRPC_ADDRESS; the address file is written", async () => {
    const b = bundle({ annotations: { "io.kubernetes.cri.sandbox-id": "pod9" } });
    const r = await run([...flags, "start"], { cwd: b, env: { TTRPC_ADDRESS: "/run/c.sock.ttrpc-env" } });
    expect(r.code).toBe(0);
    expect(r.starts).toHaveLength(1);
    expect(r.starts[0]).toMatchObject({ bundle: b, group: "pod9", ttrpcAddress: "/run/c.sock.ttrpc-env" });
    expect(r.starts[0]?.socketDir).toBeUndefined();
    expect(readFileSync(join(b, "address"), "utf8")).toBe("unix:///run/fake.sock");
    // containerd 1.6: the plain address.
    expect(r.out).toEqual(["unix:///run/fake.sock"]);
  });

  test("start: without TTRPC_ADDRESS events go to <address>.ttrpc; a config.json that does not parse makes the container its own group", async () => {
    const b = bundle("{not json");
    const r = await run([...flags, "-bundle", b, "start"], { env: { MAX_SHIM_VERSION: "2" } });
    expect(r.code).toBe(0);
    expect(r.starts[0]).toMatchObject({ bundle: b, group: "c1", ttrpcAddress: "/run/c.sock.ttrpc" });
    expect(JSON.parse(r.out[0] as string)).toEqual({ version: 2, address: "unix:///run/fake.sock", protocol: "ttrpc" });
  });

  test("start for containerd's shim sandboxer: a bundle with containerd's layout and no config.json is the pod's own, its id the group", async () => {
    const b = mkdtempSync(join(tmpdir(), "bw-cli-"));
    dirs.push(b);
    mkdirSync(join(b, "rootfs"));
    mkdirSync(join(b, "workdir"));
    symlinkSync(join(b, "workdir"), join(b, "work"));
    const stdin = BootstrapParams.encode(BootstrapParams.fromPartial({ instanceId: "pod1", namespace: "ns1" })).finish();
    const r = await run([...flags.slice(0, -1), "pod1", "start"], { cwd: b, stdin });
    expect(r.code).toBe(0);
    expect(r.starts[0]).toMatchObject({ bundle: b, group: "pod1", sandbox: true });
    expect(BootstrapResult.decode(r.out[0] as Uint8Array)).toEqual({ version: 3, address: "unix:///run/fake.sock", protocol: "ttrpc" });
    // A container's bundle is not one: it has a config.json.
    const c = await run([...flags, "start"], { cwd: bundle() });
    expect(c.starts[0]?.sandbox).toBe(false);
    // A directory without containerd's layout is still refused (no address file left in it).
    const plain = mkdtempSync(join(tmpdir(), "bw-cli-"));
    dirs.push(plain);
    mkdirSync(join(plain, "rootfs"));
    const refused = await run([...flags, "start"], { cwd: plain });
    expect(refused.code).toBe(1);
    expect(refused.err).toContain("no config.json");
    expect(existsSync(join(plain, "address"))).toBe(false);
  });

  test("start: containerd 2.3+'s BootstrapParams give the ttrpc address and socket dir, and get a BootstrapResult", async () => {
    const b = bundle();
    const stdin = BootstrapParams.encode(
      BootstrapParams.fromPartial({ instanceId: "c1", namespace: "ns1", containerdTtrpcAddress: "/run/boot.ttrpc", socketDir: "/run/sd" }),
    ).finish();
    const r = await run([...flags, "start"], { cwd: b, stdin, env: { TTRPC_ADDRESS: "/run/env.ttrpc" } });
    expect(r.code).toBe(0);
    expect(r.starts[0]).toMatchObject({ ttrpcAddress: "/run/boot.ttrpc", socketDir: "/run/sd" });
    expect(BootstrapResult.decode(r.out[0] as Uint8Array)).toEqual({ version: 3, address: "unix:///run/fake.sock", protocol: "ttrpc" });
  });

  test("a failing start says why on stderr (status 1); delete prints what the shim's delete returns", async () => {
    const b = bundle();
    const failing: ShimBinary = {
      binaryName: "containerd-shim-fake-v1",
      runtime: "io.containerd.fake.v1",
      description: "",
      start: async () => {
        throw new Error("no daemon here");
      },
      delete: async () => new Uint8Array(),
      features: (f) => f,
    };
    let err = "";
    const io = { stdin: async () => new Uint8Array(), stdout: () => {}, stderr: (s: string) => void (err += s), env: {}, cwd: b };
    expect(await runShimCli([...flags, "start"], failing, io)).toBe(1);
    expect(err).toBe("containerd-shim-fake-v1 start: no daemon here\n");
    expect(existsSync(join(b, "address"))).toBe(false);
    const d = await run([...flags, "delete"]);
    expect(d.code).toBe(0);
    expect(d.deletes).toEqual(["c1"]);
    expect(d.out).toEqual([new Uint8Array([1, 2, 3])]);
  });
});
