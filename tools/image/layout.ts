// An OCI image layout (image-spec v1.0 "oci-layout" 1.0.0) holding one single-platform image,
// as one tar archive that `ctr images import` reads:
//   oci-layout, index.json, blobs/sha256/<config>, <manifest>, <layer>
// index.json points straight at the manifest (no nested index), with the platform on the
// descriptor and both name annotations, so containerd names the image without --base-name.

import { readFileSync, writeFileSync } from "node:fs";
import { type Digest, digestHex, sha256 } from "./digest.ts";
import { buildLayer, type Layer, type LayerItem, type LayerOptions } from "./layer.ts";
import { Annotation, MediaType } from "./media-types.ts";
import { hostPlatform, type Platform } from "./platform.ts";
import { normalizeReference } from "./reference.ts";
import { type TarEntry, writeTar } from "./tar.ts";

export interface ImageConfig {
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
  workingDir?: string;
  user?: string;
  labels?: Record<string, string>;
}

export interface ImageSpec {
  /** Image name; normalized to the fully qualified form (docker.io/library/x:latest). */
  name: string;
  files: LayerItem[];
  config?: ImageConfig;
  /** Default: the host's linux platform (linux/amd64 here). */
  platform?: Platform;
  /** Extra manifest annotations. */
  annotations?: Record<string, string>;
  /** Mark as a wasm image ("module.wasm.image/variant": "compat"); default: detected. */
  wasm?: boolean;
  layer?: LayerOptions;
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

export interface BuiltImage {
  name: string;
  tag: string;
  wasm: boolean;
  layer: Layer;
  config: { digest: Digest; bytes: Uint8Array; json: Record<string, unknown> };
  manifest: { digest: Digest; bytes: Uint8Array; json: Record<string, unknown> };
  index: { bytes: Uint8Array; json: Record<string, unknown> };
  /** Every entry of the archive, in order. */
  entries: TarEntry[];
}

const WASM_MAGIC = [0x00, 0x61, 0x73, 0x6d];

function itemBytes(item: LayerItem): Uint8Array | undefined {
  if ("data" in item) return typeof item.data === "string" ? new TextEncoder().encode(item.data) : item.data;
  if ("source" in item) return new Uint8Array(readFileSync(item.source));
  return undefined;
}

/** True when the program the image starts (entrypoint[0], else cmd[0]) is a wasm module in the layer. */
export function startsWasm(files: LayerItem[], config: ImageConfig | undefined): boolean {
  const prog = config?.entrypoint?.[0] ?? config?.cmd?.[0];
  if (!prog) return false;
  const want = prog.replace(/^\/+/, "");
  const item = [...files].reverse().find((f) => f.path.replace(/^\/+/, "") === want);
  const data = item && itemBytes(item);
  return !!data && data.length >= 4 && WASM_MAGIC.every((b, i) => data[i] === b);
}

const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

export function buildImage(spec: ImageSpec): BuiltImage {
  const ref = normalizeReference(spec.name);
  const platform = spec.platform ?? hostPlatform();
  const cfg = spec.config ?? {};
  const wasm = spec.wasm ?? startsWasm(spec.files, cfg);
  const layer = buildLayer(spec.files, spec.layer);

  const runConfig: Record<string, unknown> = {};
  if (cfg.user) runConfig.User = cfg.user;
  if (cfg.env?.length) runConfig.Env = cfg.env;
  if (cfg.entrypoint?.length) runConfig.Entrypoint = cfg.entrypoint;
  if (cfg.cmd?.length) runConfig.Cmd = cfg.cmd;
  if (cfg.workingDir) runConfig.WorkingDir = cfg.workingDir;
  const labels = { ...(cfg.labels ?? {}) };
  if (wasm) labels[Annotation.wasmVariant] = "compat";
  if (Object.keys(labels).length) runConfig.Labels = labels;

  const configJson: Record<string, unknown> = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: runConfig,
    rootfs: { type: "layers", diff_ids: [layer.diffId] },
    history: [{ created_by: "bunwasi image builder", comment: wasm ? "wasm module" : "" }],
  };
  const configBytes = json(configJson);
  const configDigest = sha256(configBytes);

  const annotations: Record<string, string> = { ...(spec.annotations ?? {}) };
  if (wasm) annotations[Annotation.wasmVariant] = "compat";
  const manifestJson: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: MediaType.manifest,
    config: { mediaType: MediaType.config, digest: configDigest, size: configBytes.length },
    layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }],
    ...(Object.keys(annotations).length ? { annotations } : {}),
  };
  const manifestBytes = json(manifestJson);
  const manifestDigest = sha256(manifestBytes);

  const indexAnnotations: Record<string, string> = { [Annotation.containerdImageName]: ref.full };
  if (ref.tag) indexAnnotations[Annotation.refName] = ref.tag;
  const manifestDesc: Descriptor = {
    mediaType: MediaType.manifest,
    digest: manifestDigest,
    size: manifestBytes.length,
    platform,
    annotations: indexAnnotations,
  };
  const indexJson = { schemaVersion: 2, mediaType: MediaType.index, manifests: [manifestDesc] };
  const indexBytes = json(indexJson);

  const blob = (digest: Digest, data: Uint8Array): TarEntry => ({
    type: "file",
    path: `blobs/sha256/${digestHex(digest)}`,
    data,
    mode: 0o444,
  });
  const entries: TarEntry[] = [
    { type: "file", path: "oci-layout", data: json({ imageLayoutVersion: "1.0.0" }), mode: 0o444 },
    { type: "file", path: "index.json", data: indexBytes, mode: 0o444 },
    { type: "dir", path: "blobs", mode: 0o755 },
    { type: "dir", path: "blobs/sha256", mode: 0o755 },
    blob(configDigest, configBytes),
    blob(manifestDigest, manifestBytes),
    blob(layer.digest, layer.blob),
  ];
  return {
    name: ref.full,
    tag: ref.tag,
    wasm,
    layer,
    config: { digest: configDigest, bytes: configBytes, json: configJson },
    manifest: { digest: manifestDigest, bytes: manifestBytes, json: manifestJson },
    index: { bytes: indexBytes, json: indexJson },
    entries,
  };
}

/** The image as an OCI layout tar archive. */
export function imageArchive(spec: ImageSpec): { image: BuiltImage; archive: Uint8Array } {
  const image = buildImage(spec);
  return { image, archive: writeTar(image.entries) };
}

export function writeImageArchive(path: string, spec: ImageSpec): BuiltImage {
  const { image, archive } = imageArchive(spec);
  writeFileSync(path, archive);
  return image;
}
