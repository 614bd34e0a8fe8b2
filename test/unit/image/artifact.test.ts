// OCI wasm artifacts (tools/image/artifact.ts): the layers are the wasm bytes themselves, with
// wasm media types; the config says architecture wasm and lists no diff_ids; every descriptor
// matches its blob; index.json names the image and its wasm platform, as `ctr images import`
// reads it.
import { describe, expect, test } from "bun:test";
import { buildArtifact, MediaType, readTar, sha256, WasmMediaType, writeTar } from "../../../tools/image/index.ts";

const MODULE = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
const COMPONENT = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]);
const dec = new TextDecoder();

function blobs(entries: ReturnType<typeof buildArtifact>["entries"]): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const e of readTar(writeTar(entries)))
    if (e.type === "file" && e.path.startsWith("blobs/sha256/")) out.set(`sha256:${e.path.slice(13)}`, e.data);
  return out;
}

describe("wasm artifacts", () => {
  test("a module: application/wasm layer, wasm config, wasip1 platform, no diff_ids", () => {
    const a = buildArtifact({ name: "app:1", layers: [{ data: MODULE }], entrypoint: ["/app.wasm"], env: ["A=1"] });
    expect(a.name).toBe("docker.io/library/app:1");
    expect(a.layers).toEqual([{ mediaType: WasmMediaType.wasm, digest: sha256(MODULE), size: MODULE.length }]);
    const m = a.manifest.json as any;
    expect(m.mediaType).toBe(MediaType.manifest);
    expect(m.artifactType).toBe(WasmMediaType.config);
    expect(m.config).toEqual({ mediaType: WasmMediaType.config, digest: a.config.digest, size: a.config.bytes.length });
    const c = a.config.json as any;
    expect(c.architecture).toBe("wasm");
    expect(c.os).toBe("wasip1");
    expect(c.layerDigests).toEqual([sha256(MODULE)]);
    expect(c.rootfs).toEqual({ type: "layers", diff_ids: [] });
    expect(c.config).toEqual({ Entrypoint: ["/app.wasm"], Env: ["A=1"] });
    expect(c.component).toBeUndefined();
  });

  test("a component: the component layer type and wasip2; the OCI config type on request", () => {
    const a = buildArtifact({ name: "c:1", layers: [{ data: COMPONENT }], configMediaType: "oci" });
    expect(a.layers[0]?.mediaType).toBe(WasmMediaType.component);
    expect((a.config.json as any).os).toBe("wasip2");
    expect((a.config.json as any).component).toBeDefined();
    expect((a.manifest.json as any).config.mediaType).toBe(MediaType.config);
    expect((a.manifest.json as any).artifactType).toBeUndefined();
  });

  test("every descriptor matches its blob; index.json names the image and the wasm platform", () => {
    const a = buildArtifact({ name: "two:1", layers: [{ data: MODULE }, { data: COMPONENT, mediaType: WasmMediaType.content }] });
    const b = blobs(a.entries);
    for (const d of [...a.layers, (a.manifest.json as any).config]) {
      expect(b.get(d.digest)?.length).toBe(d.size);
      expect(sha256(b.get(d.digest) as Uint8Array)).toBe(d.digest);
    }
    expect(sha256(b.get(a.manifest.digest) as Uint8Array)).toBe(a.manifest.digest);
    const indexEntry = readTar(writeTar(a.entries)).find((e) => e.path === "index.json");
    if (indexEntry?.type !== "file") throw new Error("no index.json");
    const index = JSON.parse(dec.decode(indexEntry.data));
    expect(index.manifests).toHaveLength(1);
    expect(index.manifests[0].digest).toBe(a.manifest.digest);
    expect(index.manifests[0].platform).toEqual({ os: "wasip1", architecture: "wasm" });
    expect(index.manifests[0].annotations["io.containerd.image.name"]).toBe("docker.io/library/two:1");
    expect(a.layers.map((l) => l.mediaType)).toEqual([WasmMediaType.wasm, WasmMediaType.content]);
  });

  test("the same wasm twice is one blob; no layers is refused", () => {
    const a = buildArtifact({ name: "dup:1", layers: [{ data: MODULE }, { data: MODULE }] });
    expect(a.layers).toHaveLength(2);
    expect(a.entries.filter((e) => e.path === `blobs/sha256/${sha256(MODULE).slice(7)}`)).toHaveLength(1);
    expect(() => buildArtifact({ name: "none:1", layers: [] })).toThrow("at least one wasm layer");
  });
});
