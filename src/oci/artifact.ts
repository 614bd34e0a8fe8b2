// OCI wasm artifacts (docs/ARCHITECTURE.md, "OCI wasm artifacts"): images whose config says
// architecture "wasm" and whose layers are wasm binaries rather than root filesystems. Such
// a container's rootfs is empty; its program is the image's one wasm layer, read from
// containerd's content store through containerd's API (src/containerd/client.ts).
//
// The compiled artifact goes two places: the node's compile cache (what the executor maps)
// and back into the content store, next to the layer, so that it lives and dies with the
// image (containerd's garbage collector follows `containerd.io/gc.ref.content.*` labels:
// image → manifest → layer → compiled blob). The next container of the image on this node,
// from any shim, finds it through the layer's label even when the local cache lost it. Labels
// are anyone's to write who reaches containerd's API, and a digest proves bytes intact, not
// who compiled them: a stored compile is taken only with its MAC under this node's key
// (the label `bunwasi.io/precompiled.mac`, docs/ARCHITECTURE.md "Compiled code we trust").

import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import type { ContainerdClient, Info } from "../containerd/client.ts";
import { GrpcCode, GrpcError } from "../containerd/errors.ts";
import type { CompileCache } from "../engines/cache.ts";
import { type Compiler, type Engine, isWasmBinary } from "../engines/engine.ts";

/** Layer media types that hold a wasm binary (a core module or a component). */
export const WASM_LAYER_TYPES: readonly string[] = [
  "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
  "application/wasm",
  "application/vnd.wasm.content.layer.v1+wasm",
];
export const WASM_CONFIG_TYPE = "application/vnd.wasm.config.v0+json";

const INDEX_TYPES = ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];
/** Manifests and configs are small; anything bigger is not what it claims to be. */
const MAX_JSON_BYTES = 4 << 20;

/** Labels the shim owns. The layer's point at the compiled blob; the blob's say what it is. */
export const Labels = {
  /** On the wasm layer: the digest of its compiled artifact for this engine. */
  precompiled: (engine: string) => `bunwasi.io/precompiled.${engine}`,
  /** On the wasm layer: the same digest, as a reference containerd's garbage collector follows. */
  gcRef: (engine: string) => `containerd.io/gc.ref.content.bunwasi.precompiled.${engine}`,
  /** On the compiled blob: the compile-cache key (module digest, engine, version, settings). */
  key: "bunwasi.io/precompiled.key",
  /** On the compiled blob: the layer it was compiled from. */
  source: "bunwasi.io/precompiled.source",
  /** On the compiled blob: its MAC under the node's key, over the key and its bytes (CompileCache.mac). */
  mac: "bunwasi.io/precompiled.mac",
} as const;

export class ArtifactError extends Error {
  override name = "ArtifactError";
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface WasmArtifact {
  /** The image's name in containerd. */
  image: string;
  layer: Descriptor;
  /** The layer's bytes, checked against its digest. */
  bytes: Uint8Array;
}

const sha256 = (b: Uint8Array) => `sha256:${new Bun.CryptoHasher("sha256").update(b).digest("hex")}`;

async function readJson(client: ContainerdClient, desc: { digest: string }, what: string): Promise<any> {
  const bytes = await client.read(desc.digest, MAX_JSON_BYTES);
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new ArtifactError(`${what} ${desc.digest} is not JSON`);
  }
}

/**
 * The container's wasm layer if its image is a wasm artifact; undefined if the image is an
 * ordinary one (or the container has none). Throws ArtifactError for an artifact the shim
 * cannot run: no wasm layer, more than one, a layer whose bytes do not match its digest or
 * are not wasm.
 */
export async function resolveArtifact(
  client: ContainerdClient,
  containerId: string,
  /**
   * A node-local copy of layers by digest (a CompileCache of sources): a hit, checked against
   * its digest, saves reading the layer from containerd on every container of the image.
   */
  layers?: CompileCache,
): Promise<WasmArtifact | undefined> {
  const container = await client.container(containerId);
  if (!container.image) return undefined;
  const image = await client.image(container.image);
  let target = image.target;
  if (!target) throw new ArtifactError(`image ${container.image} has no target`);
  if (INDEX_TYPES.includes(target.mediaType)) {
    // An index: the wasm manifest is the one whose platform says so.
    const index = await readJson(client, target, "image index");
    const m = (index.manifests ?? []).find((d: any) => d?.platform?.architecture === "wasm");
    if (!m) return undefined;
    target = { mediaType: m.mediaType, digest: m.digest, size: m.size, annotations: {} };
  }
  const manifest = await readJson(client, target, "manifest");
  const configDesc = manifest.config as Descriptor | undefined;
  if (!configDesc?.digest) throw new ArtifactError(`manifest ${target.digest} of image ${container.image} has no config`);
  const config = await readJson(client, configDesc, "image config");
  if (config.architecture !== "wasm" && configDesc.mediaType !== WASM_CONFIG_TYPE) return undefined;

  const wasmLayers = ((manifest.layers ?? []) as Descriptor[]).filter((l) => WASM_LAYER_TYPES.includes(l.mediaType));
  if (wasmLayers.length === 0)
    throw new ArtifactError(
      `image ${container.image} is a wasm artifact but has no wasm layer (media types ${WASM_LAYER_TYPES.join(", ")})`,
    );
  if (wasmLayers.length > 1)
    throw new ArtifactError(
      `image ${container.image} has ${wasmLayers.length} wasm layers (${wasmLayers.map((l) => l.digest).join(", ")}); a container runs exactly one`,
    );
  const layer = wasmLayers[0] as Descriptor;
  const localKey = `${layer.digest.replace(/^sha256:/, "")}-layer`;
  const local = layers?.get(localKey);
  if (local && sha256(local) === layer.digest) return { image: container.image, layer, bytes: local };
  const bytes = await client.read(layer.digest);
  // containerd checks a digest when content is written, not when it is read back: a blob
  // damaged on disk since would otherwise run (or be compiled and cached) as it is.
  const actual = sha256(bytes);
  if (actual !== layer.digest)
    throw new ArtifactError(`wasm layer ${layer.digest} of image ${container.image} is corrupt: its content hashes to ${actual}`);
  if (!isWasmBinary(bytes)) throw new ArtifactError(`wasm layer ${layer.digest} of image ${container.image} is not a wasm binary`);
  // A failed write only costs the next container a read from containerd.
  await layers?.put(localKey, bytes).catch(() => {});
  return { image: container.image, layer, bytes };
}

export interface PrecompileOutcome {
  /** Where the compile cache's artifact came from this time. */
  from: "cache" | "content-store" | "compiled";
  /** The compiled blob's digest in the content store, once it is there. */
  stored?: string;
  /** Why a stored artifact was not used, if one was labelled. */
  rejected?: string;
}

/**
 * Make sure the compile cache holds `artifact`'s compiled form and that the content store
 * does too, labelled for the garbage collector. Compiles only when neither has a valid one.
 * A compile error is the container's error (ArtifactError): there is nothing else to run.
 * Failing to write back only costs the next node-local miss a compile, so it is logged.
 */
export async function precompileArtifact(
  client: ContainerdClient,
  engine: Engine,
  cache: CompileCache,
  artifact: WasmArtifact,
  log: (msg: string, level?: "debug" | "info" | "warning" | "error") => void,
): Promise<PrecompileOutcome> {
  const compiler = engine.compiler;
  if (!compiler) return { from: "compiled" };
  const store = new StoredCompile(client, engine.name, artifact, cache, log);
  const compiling: Compiler = {
    cacheKey: (source) => compiler.cacheKey(source),
    compile: (source) =>
      compiler.compile(source).catch((e) => {
        throw new ArtifactError(
          `wasm layer ${artifact.layer.digest} of image ${artifact.image} does not compile: ${e instanceof Error ? e.message : String(e)}`,
        );
      }),
  };
  // Containers of one image created together (a Deployment's replicas in one pod's shim, or
  // a daemon's many pods) wait for one compile and one write instead of racing to do both:
  // the cache's ensure() shares it among callers of the same containerd and namespace.
  const { key, from, published, rejected } = await cache.ensure(compiling, artifact.bytes, {
    scope: `${client.address}\0${client.namespace}`,
    fetch: (key) => store.fetch(key),
    publish: async (key, from) => {
      if (from === "compiled") log(`artifact ${artifact.image}: compiled ${artifact.layer.digest} (${engine.name})`);
      return store.publish(key);
    },
  });
  if (rejected) log(`artifact ${artifact.image}: compile cache: ${key}.cwasm not used: ${rejected}`, "warning");
  return { from: from === "fetched" ? "content-store" : from, ...published };
}

/**
 * The compile of an artifact's layer in containerd's content store, as one ensure() sees it:
 * looked up once (the layer's label, then the blob's), fetched on a miss of the node's cache,
 * and written back when there is no valid one.
 */
class StoredCompile {
  /** The blob the layer's label names, when it is this key's compile and its bytes are whole. */
  private stored: string | undefined;
  /** Its MAC label: verified against its bytes when they are fetched. */
  private storedMac: string | undefined;
  /** Why a labelled blob was not used. */
  private rejected: string | undefined;
  private looked: Promise<void> | undefined;

  constructor(
    private readonly client: ContainerdClient,
    private readonly engineName: string,
    private readonly artifact: WasmArtifact,
    /** The node's compile cache: its key makes and checks MACs. */
    private readonly cache: CompileCache,
    private readonly log: (msg: string, level?: "debug" | "info" | "warning" | "error") => void,
  ) {}

  /** A stored artifact counts only if it says it is ours for exactly this key. */
  private lookup(key: string): Promise<void> {
    this.looked ??= (async () => {
      const layerInfo = await this.client.info(this.artifact.layer.digest);
      const labelled = layerInfo.labels[Labels.precompiled(this.engineName)];
      if (!labelled) return;
      // Another engine version (or settings, or source) is stale.
      let storedInfo: Info;
      try {
        storedInfo = await this.client.info(labelled);
      } catch (e) {
        if (!(e instanceof GrpcError && e.code === GrpcCode.NOT_FOUND)) throw e;
        return this.reject(`${labelled} is not in the content store`);
      }
      if (storedInfo.labels[Labels.key] !== key)
        return this.reject(`${labelled} was compiled for ${storedInfo.labels[Labels.key] ?? "something else"}`);
      this.stored = labelled;
      this.storedMac = storedInfo.labels[Labels.mac];
    })();
    return this.looked;
  }

  private reject(why: string): void {
    this.rejected = why;
    this.log(`artifact ${this.artifact.image}: ignoring the stored compile of ${this.artifact.layer.digest}: ${why}`, "warning");
  }

  /** The stored compile's bytes, if it is this key's, whole and compiled on this node (a miss of the node's cache). */
  async fetch(key: string): Promise<Uint8Array | undefined> {
    await this.lookup(key);
    const stored = this.stored;
    if (!stored) return undefined;
    const bytes = await this.client.read(stored);
    const actual = sha256(bytes);
    if (actual === stored) {
      // Whole, and labelled this key's: still anyone's bytes, unless their MAC is ours. Not
      // deleted when it is not: it may be another layer's good compile, relabelled.
      const mac = await this.cache.mac(key, bytes);
      if (this.storedMac === undefined || this.storedMac !== mac) {
        this.stored = undefined;
        this.reject(
          `${stored} was not compiled on this node (its ${Labels.mac} label ${this.storedMac ? "does not verify" : "is missing"})`,
        );
        return undefined;
      }
      this.log(`artifact ${this.artifact.image}: compiled ${this.artifact.layer.digest} taken from the content store (${stored})`);
      return bytes;
    }
    this.stored = undefined;
    this.reject(`${stored} is corrupt: its content hashes to ${actual}`);
    // Removed, and collected so that the file is gone from containerd's backing store too:
    // the write back then stores good bytes under that digest again, where a write of
    // content containerd still has would only relabel the damaged file.
    await this.client
      .delete(stored)
      .then(() => this.client.collectGarbage())
      .catch((e) => this.log(`removing corrupt ${stored}: ${String(e)}`, "warning"));
    return undefined;
  }

  /** Writes the node cache's compile back beside the layer unless a valid one is there. */
  async publish(key: string): Promise<{ stored?: string; rejected?: string }> {
    await this.lookup(key);
    const rejected = this.rejected ? { rejected: this.rejected } : {};
    if (this.stored) return { stored: this.stored, ...rejected };
    const { client, artifact, engineName } = this;
    try {
      const { entry, rejected: notUsed } = await this.cache.check(key, { read: true });
      entry?.close();
      const bytes = entry?.bytes;
      if (!entry || !bytes) throw new Error(`the compile cache lost it meanwhile${notUsed ? ` (${notUsed})` : ""}`);
      const digest = sha256(bytes);
      await client.withLease(async (lease) => {
        await client.write({
          ref: `bunwasi-precompiled-${key}`,
          data: bytes,
          expected: digest,
          labels: { [Labels.key]: key, [Labels.source]: artifact.layer.digest, [Labels.mac]: entry.mac },
          lease,
        });
        // Still under the lease: from this label on, the layer keeps the blob alive, and a
        // stale blob the label pointed at before loses its last reference.
        await client.setLabels(artifact.layer.digest, { [Labels.precompiled(engineName)]: digest, [Labels.gcRef(engineName)]: digest });
      });
      this.log(`artifact ${artifact.image}: stored the compile of ${artifact.layer.digest} as ${digest}`);
      return { stored: digest, ...rejected };
    } catch (e) {
      this.log(
        `artifact ${artifact.image}: writing the compile back to the content store: ${e instanceof Error ? e.message : String(e)}`,
        "warning",
      );
      return rejected;
    }
  }
}

const clients = new Map<string, ContainerdClient>();
const caches = new Map<string, CompileCache>();

/**
 * The hook src/oci/bundle.ts calls for a container whose entrypoint is not in its rootfs:
 * containerd at `address` is asked for the container's image; for a wasm artifact the layer
 * is compiled (or its compile fetched) before runc creates the container, so a layer that
 * does not compile fails the Create with its reason. One client per namespace and process.
 */
export async function artifactForContainer(o: {
  address: string;
  namespace: string;
  id: string;
  engine: Engine;
  cacheDir: string;
  log: (msg: string, level?: "debug" | "info" | "warning" | "error") => void;
}): Promise<WasmArtifact | undefined> {
  if (!o.address) return undefined;
  const { ContainerdClient } = await import("../containerd/client.ts");
  const { CompileCache } = await import("../engines/cache.ts");
  const k = `${o.address}\0${o.namespace}`;
  let client = clients.get(k);
  if (!client) clients.set(k, (client = new ContainerdClient(o.address, o.namespace)));
  let cache = caches.get(o.cacheDir);
  if (!cache) caches.set(o.cacheDir, (cache = new CompileCache({ dir: o.cacheDir })));
  // Layers beside the compile cache, not in it: entries there are compiled code, each with its MAC.
  const layersDir = join(dirname(o.cacheDir), "artifact-layers");
  let layers = caches.get(layersDir);
  // No key: a layer is checked against its digest on every use, and is never loaded as code.
  if (!layers) caches.set(layersDir, (layers = new CompileCache({ dir: layersDir, maxBytes: 256 << 20, keyFile: null })));
  // An operator (or a cache reset) may have removed them since this process first wrote to them.
  for (const d of [o.cacheDir, layersDir]) mkdirSync(d, { recursive: true, mode: 0o700 });
  const artifact = await resolveArtifact(client, o.id, layers);
  if (artifact) await precompileArtifact(client, o.engine, cache, artifact, o.log);
  return artifact;
}
