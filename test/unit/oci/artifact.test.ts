// src/oci/artifact.ts against an in-memory containerd (containers, images, content with
// labels, leases): which images are artifacts, the errors for bad ones, and when the
// compile comes from the node's cache, from the content store (only with this node's MAC), or
// from the compiler.
// test/e2e/artifacts.test.ts runs the same against real containerds.
import { afterAll, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ContainerdClient } from "../../../src/containerd/client.ts";
import { GrpcCode, GrpcError } from "../../../src/containerd/errors.ts";
import { CompileCache } from "../../../src/engines/cache.ts";
import type { Engine } from "../../../src/engines/engine.ts";
import { ArtifactError, Labels, precompileArtifact, resolveArtifact, WASM_CONFIG_TYPE } from "../../../src/oci/artifact.ts";

const base = mkdtempSync(join(tmpdir(), "bunwasi-artifact-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

const enc = new TextEncoder();
const sha = (b: Uint8Array) => `sha256:${new Bun.CryptoHasher("sha256").update(b).digest("hex")}`;
const MODULE = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
const OTHER = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0, 3, 1, 0]);

/** containerd's containers, images and content, in memory, as the client's methods see them. */
class FakeContainerd {
  containers = new Map<string, string>();
  images = new Map<string, { mediaType: string; digest: string; size: number }>();
  blobs = new Map<string, { data: Uint8Array; labels: Record<string, string> }>();
  writes = 0;
  reads: string[] = [];
  deletes: string[] = [];
  leases = 0;

  put(data: Uint8Array): string {
    const d = sha(data);
    if (!this.blobs.has(d)) this.blobs.set(d, { data, labels: {} });
    return d;
  }
  json(v: unknown) {
    const data = enc.encode(JSON.stringify(v));
    return { digest: this.put(data), size: data.length };
  }
  /** An image of `layers` (media type, bytes) with a config of `arch`; a container of it. */
  image(name: string, layers: [string, Uint8Array][], arch = "wasm", configType = WASM_CONFIG_TYPE): string {
    const config = this.json({ architecture: arch, os: "wasip1" });
    const manifest = this.json({
      schemaVersion: 2,
      config: { mediaType: configType, ...config },
      layers: layers.map(([mediaType, data]) => ({ mediaType, digest: this.put(data), size: data.length })),
    });
    this.images.set(name, { mediaType: "application/vnd.oci.image.manifest.v1+json", ...manifest });
    this.containers.set(`c-${name}`, name);
    return `c-${name}`;
  }
  notFound(what: string): never {
    throw new GrpcError(GrpcCode.NOT_FOUND, `${what}: not found`, "fake");
  }

  client(): ContainerdClient {
    const c = {
      address: "fake",
      namespace: `ns-${Math.random()}`,
      container: async (id: string) => ({ id, image: this.containers.get(id) ?? this.notFound(id), labels: {} }),
      image: async (name: string) => ({ name, labels: {}, target: { ...(this.images.get(name) ?? this.notFound(name)), annotations: {} } }),
      info: async (digest: string) => {
        const b = this.blobs.get(digest) ?? this.notFound(digest);
        return { digest, size: b.data.length, labels: { ...b.labels } };
      },
      read: async (digest: string) => {
        this.reads.push(digest);
        return (this.blobs.get(digest) ?? this.notFound(digest)).data;
      },
      setLabels: async (digest: string, labels: Record<string, string>) => {
        const b = this.blobs.get(digest) ?? this.notFound(digest);
        Object.assign(b.labels, labels);
        return { digest, size: b.data.length, labels: b.labels };
      },
      withLease: async <T>(fn: (lease: string) => Promise<T>) => {
        this.leases++;
        return fn("lease-1");
      },
      write: async (o: { data: Uint8Array; expected: string; labels: Record<string, string> }) => {
        this.writes++;
        if (sha(o.data) !== o.expected) throw new Error("digest mismatch");
        const b = this.blobs.get(o.expected);
        if (b) Object.assign(b.labels, o.labels);
        else this.blobs.set(o.expected, { data: o.data, labels: { ...o.labels } });
        return o.expected;
      },
      collectGarbage: async () => {},
      delete: async (digest: string) => {
        this.deletes.push(digest);
        this.blobs.delete(digest);
      },
    };
    return c as unknown as ContainerdClient;
  }
}

/** An engine whose "compile" reverses the bytes, counted; "version" is part of its key. */
function fakeEngine(version = "1"): Engine & { compiled: number } {
  const e = {
    name: "fake",
    compiled: 0,
    canHandle: () => true,
    executor: () => ({ files: [] }),
    load: async () => {
      throw new Error("not loaded in this test");
    },
    compiler: {
      cacheKey: async (src: Uint8Array) => CompileCache.key(src, "fake", version, ""),
      compile: async (src: Uint8Array) => {
        if (src.length > 8 && src[8] === 0xff) throw new Error("bad section");
        e.compiled++;
        return src.slice().reverse();
      },
    },
  };
  return e;
}

describe("resolveArtifact", () => {
  test("an ordinary image is not an artifact; a wasm one gives its layer's bytes", async () => {
    const f = new FakeContainerd();
    const plain = f.image(
      "plain",
      [["application/vnd.oci.image.layer.v1.tar+gzip", enc.encode("tar")]],
      "amd64",
      "application/vnd.oci.image.config.v1+json",
    );
    expect(await resolveArtifact(f.client(), plain)).toBeUndefined();
    const art = f.image("art", [["application/wasm", MODULE]]);
    const r = await resolveArtifact(f.client(), art);
    expect(r?.bytes).toEqual(MODULE);
    expect(r?.layer).toEqual({ mediaType: "application/wasm", digest: sha(MODULE), size: MODULE.length });
    expect(r?.image).toBe("art");
  });

  test("with a node-local copy of layers, the next container's layer is not read from containerd (a damaged copy is)", async () => {
    const f = new FakeContainerd();
    const layers = new CompileCache({ dir: join(base, "layers"), keyFile: null });
    const id = f.image("art", [["application/wasm", MODULE]]);
    expect((await resolveArtifact(f.client(), id, layers))?.bytes).toEqual(MODULE);
    f.reads.length = 0;
    expect((await resolveArtifact(f.client(), id, layers))?.bytes).toEqual(MODULE);
    expect(f.reads).not.toContain(sha(MODULE));
    const key = `${sha(MODULE).slice(7)}-layer`;
    await layers.put(key, OTHER);
    expect((await resolveArtifact(f.client(), id, layers))?.bytes).toEqual(MODULE);
    expect(f.reads).toContain(sha(MODULE));
    expect(layers.get(key)).toEqual(MODULE);
  });

  test("bad artifacts: two wasm layers, none, damaged bytes, not wasm", async () => {
    const f = new FakeContainerd();
    const two = f.image("two", [
      ["application/wasm", MODULE],
      ["application/vnd.wasm.content.layer.v1+wasm", OTHER],
    ]);
    await expect(resolveArtifact(f.client(), two)).rejects.toThrow(/has 2 wasm layers .*a container runs exactly one/);
    const none = f.image("none", [["text/plain", enc.encode("hi")]]);
    await expect(resolveArtifact(f.client(), none)).rejects.toThrow(/is a wasm artifact but has no wasm layer/);
    const damaged = f.image("damaged", [["application/wasm", OTHER]]);
    (f.blobs.get(sha(OTHER)) as { data: Uint8Array }).data = MODULE;
    await expect(resolveArtifact(f.client(), damaged)).rejects.toThrow(`wasm layer ${sha(OTHER)} of image damaged is corrupt`);
    const text = f.image("text", [["application/wasm", enc.encode("hello")]]);
    await expect(resolveArtifact(f.client(), text)).rejects.toBeInstanceOf(ArtifactError);
  });
});

describe("precompileArtifact", () => {
  let f: FakeContainerd;
  let cacheDir: string;
  let n = 0;
  const logs: string[] = [];
  const log = (m: string) => logs.push(m);
  beforeEach(() => {
    f = new FakeContainerd();
    cacheDir = join(base, `cache${n++}`);
    logs.length = 0;
  });
  // One node key for every cache of the test (a node's), beside them.
  const cache = () => new CompileCache({ dir: cacheDir, keyFile: join(base, "node.key") });
  const wipe = () => rmSync(cacheDir, { recursive: true, force: true });
  const cached = async (key: string) => {
    const { entry } = await cache().check(key, { read: true });
    entry?.close();
    return entry?.bytes;
  };

  test("compiled once, stored with its labels under a lease, then reused from the cache and from the store", async () => {
    const engine = fakeEngine();
    const id = f.image("art", [["application/wasm", MODULE]]);
    const art = (await resolveArtifact(f.client(), id))!;
    const first = await precompileArtifact(f.client(), engine, cache(), art, log);
    expect(first.from).toBe("compiled");
    const stored = first.stored as string;
    expect(stored).toBe(sha(MODULE.slice().reverse()));
    expect(f.blobs.get(art.layer.digest)?.labels).toEqual({ [Labels.precompiled("fake")]: stored, [Labels.gcRef("fake")]: stored });
    const key = await engine.compiler!.cacheKey(MODULE);
    expect(f.blobs.get(stored)?.labels).toEqual({
      [Labels.key]: key,
      [Labels.source]: art.layer.digest,
      [Labels.mac]: await cache().mac(key, MODULE.slice().reverse()),
    });
    expect(f.leases).toBe(1);

    expect((await precompileArtifact(f.client(), engine, cache(), art, log)).from).toBe("cache");
    wipe();
    expect((await precompileArtifact(f.client(), engine, cache(), art, log)).from).toBe("content-store");
    expect(await cached(key)).toEqual(MODULE.slice().reverse());
    expect(engine.compiled).toBe(1);
    expect(f.writes).toBe(1);
  });

  test("containers of one image created together: one compile, one write", async () => {
    const engine = fakeEngine();
    const id = f.image("art", [["application/wasm", MODULE]]);
    const art = (await resolveArtifact(f.client(), id))!;
    const c = f.client();
    const all = await Promise.all([1, 2, 3].map(() => precompileArtifact(c, engine, cache(), art, log)));
    expect(all.map((r) => r.from)).toEqual(["compiled", "compiled", "compiled"]);
    expect(engine.compiled).toBe(1);
    expect(f.writes).toBe(1);
  });

  test("another engine version's compile is stale: recompiled, and the layer's labels move to the new one", async () => {
    const id = f.image("art", [["application/wasm", OTHER]]);
    const art = (await resolveArtifact(f.client(), id))!;
    await precompileArtifact(f.client(), fakeEngine("1"), cache(), art, log);
    const v2 = fakeEngine("2");
    const r = await precompileArtifact(f.client(), v2, cache(), art, log);
    expect(r.from).toBe("compiled");
    expect(r.rejected).toMatch(/was compiled for .*-fake-/);
    expect(v2.compiled).toBe(1);
    expect(f.blobs.get(r.stored as string)?.labels[Labels.key]).toBe(await v2.compiler!.cacheKey(OTHER));
    expect(f.blobs.get(art.layer.digest)?.labels[Labels.gcRef("fake")]).toBe(r.stored as string);
  });

  test("a stored compile whose bytes are not its digest is removed and written again", async () => {
    const engine = fakeEngine();
    const id = f.image("art", [["application/wasm", MODULE]]);
    const art = (await resolveArtifact(f.client(), id))!;
    const { stored } = await precompileArtifact(f.client(), engine, cache(), art, log);
    (f.blobs.get(stored as string) as { data: Uint8Array }).data = enc.encode("damaged");
    wipe();
    const r = await precompileArtifact(f.client(), engine, cache(), art, log);
    expect(r).toMatchObject({ from: "compiled", stored });
    expect(r.rejected).toContain("is corrupt");
    expect(f.deletes).toEqual([stored as string]);
    expect(f.blobs.get(stored as string)?.data).toEqual(MODULE.slice().reverse());
  });

  test("a forged label: another layer's compile labelled with this layer's key and MAC is not taken (nor deleted); ours is written", async () => {
    const engine = fakeEngine();
    const a = (await resolveArtifact(f.client(), f.image("a", [["application/wasm", MODULE]])))!;
    const b = (await resolveArtifact(f.client(), f.image("b", [["application/wasm", OTHER]])))!;
    const storedA = (await precompileArtifact(f.client(), engine, cache(), a, log)).stored as string;
    const storedB = (await precompileArtifact(f.client(), engine, cache(), b, log)).stored as string;
    // A's layer pointed at B's compile, every bunwasi label of A's compile copied onto B's.
    const copied = Object.fromEntries(Object.entries(f.blobs.get(storedA)?.labels ?? {}).filter(([k]) => k.startsWith("bunwasi.io/")));
    expect(Object.keys(copied).sort()).toEqual([Labels.key, Labels.mac, Labels.source].sort());
    await f.client().setLabels(a.layer.digest, { [Labels.precompiled("fake")]: storedB, [Labels.gcRef("fake")]: storedB });
    await f.client().setLabels(storedB, copied);
    wipe();
    const r = await precompileArtifact(f.client(), engine, cache(), a, log);
    expect(r).toMatchObject({ from: "compiled", stored: storedA });
    expect(r.rejected).toBe(`${storedB} was not compiled on this node (its ${Labels.mac} label does not verify)`);
    expect(await cached(await engine.compiler!.cacheKey(MODULE))).toEqual(MODULE.slice().reverse());
    expect(f.blobs.get(a.layer.digest)?.labels[Labels.precompiled("fake")]).toBe(storedA);
    expect(f.deletes).toEqual([]);
    expect(engine.compiled).toBe(3);
  });

  test("a stored compile without a MAC label, or from another node (another key), is compiled again here", async () => {
    const engine = fakeEngine();
    const a = (await resolveArtifact(f.client(), f.image("a", [["application/wasm", MODULE]])))!;
    const stored = (await precompileArtifact(f.client(), engine, cache(), a, log)).stored as string;
    const blob = f.blobs.get(stored) as { labels: Record<string, string> };
    delete blob.labels[Labels.mac];
    wipe();
    const r = await precompileArtifact(f.client(), engine, cache(), a, log);
    expect(r).toMatchObject({
      from: "compiled",
      stored,
      rejected: `${stored} was not compiled on this node (its ${Labels.mac} label is missing)`,
    });
    // Written again with its MAC: the next miss takes it.
    expect(blob.labels[Labels.mac]).toMatch(/^[0-9a-f]{64}$/);
    wipe();
    expect((await precompileArtifact(f.client(), engine, cache(), a, log)).from).toBe("content-store");
    // Another node's key: its MAC does not verify here.
    const elsewhere = new CompileCache({ dir: join(base, `elsewhere${n++}`), keyFile: join(base, `other${n}.key`) });
    const r2 = await precompileArtifact(f.client(), engine, elsewhere, a, log);
    expect(r2.from).toBe("compiled");
    expect(r2.rejected).toContain("was not compiled on this node");
    expect(engine.compiled).toBe(3);
  });

  test("a label naming a blob that is gone is stale; a layer that does not compile is the container's error", async () => {
    const engine = fakeEngine();
    const id = f.image("art", [["application/wasm", MODULE]]);
    const art = (await resolveArtifact(f.client(), id))!;
    await f.client().setLabels(art.layer.digest, { [Labels.precompiled("fake")]: `sha256:${"0".repeat(64)}` });
    const r = await precompileArtifact(f.client(), engine, cache(), art, log);
    expect(r.rejected).toContain("is not in the content store");
    expect(r.from).toBe("compiled");

    const bad = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0xff]);
    const badId = f.image("bad", [["application/wasm", bad]]);
    const badArt = (await resolveArtifact(f.client(), badId))!;
    await expect(precompileArtifact(f.client(), engine, cache(), badArt, log)).rejects.toThrow(
      `wasm layer ${sha(bad)} of image bad does not compile: bad section`,
    );
  });
});
