// OCI wasm artifacts: images whose layers are wasm binaries, not Linux root filesystems, as
// the CNCF "Wasm OCI artifact" layout (wasm-pkg-tools, `wkg oci push`) and runwasi's
// oci-tar-builder write them. One OCI image layout tar for `ctr images import`:
//   index.json → manifest → config (architecture "wasm") + one blob per wasm layer.
//
// The config carries both vocabularies on purpose: the wasm config's own fields
// (`layerDigests`, `component`) for wasm tools, and an OCI image config's `config`
// (Entrypoint, Env) and `rootfs` (no diff_ids: nothing to unpack) for containerd's CRI,
// which reads every config as an OCI image config whatever its media type says.

import { readFileSync, writeFileSync } from "node:fs";
import { type Digest, digestHex, sha256 } from "./digest.ts";
import type { Descriptor } from "./layout.ts";
import { Annotation, MediaType } from "./media-types.ts";
import { normalizeReference } from "./reference.ts";
import { type TarEntry, writeTar } from "./tar.ts";

/** The wasm layer and config media types containerd shims (runwasi, ours) recognise. */
export const WasmMediaType = {
  /** The CNCF Wasm OCI artifact layer (one component per layer). */
  component: "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
  /** A plain wasm binary (runwasi's oci-tar-builder default for modules). */
  wasm: "application/wasm",
  /** wasm-to-oci's layer type. */
  content: "application/vnd.wasm.content.layer.v1+wasm",
  /** The CNCF Wasm OCI artifact config. */
  config: "application/vnd.wasm.config.v0+json",
} as const;

export interface ArtifactLayer {
  /** A host file, or the bytes themselves. */
  source?: string;
  data?: Uint8Array;
  /** Default: `component` for a component binary, else `wasm`. */
  mediaType?: string;
}

export interface ArtifactSpec {
  name: string;
  layers: ArtifactLayer[];
  /** The config's media type: the wasm artifact's (default) or a plain OCI image config. */
  configMediaType?: "wasm" | "oci";
  /** The config's os: default wasip2 when every layer is a component, else wasip1. */
  os?: string;
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
}

export interface BuiltArtifact {
  name: string;
  tag: string;
  layers: Descriptor[];
  config: { digest: Digest; bytes: Uint8Array; json: Record<string, unknown>; mediaType: string };
  manifest: { digest: Digest; bytes: Uint8Array; json: Record<string, unknown> };
  entries: TarEntry[];
}

const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

/** A component binary: the wasm magic with layer 1 in bytes 6–7 (a core module has 0). */
export function isComponent(b: Uint8Array): boolean {
  return b.length >= 8 && b[0] === 0 && b[1] === 0x61 && b[2] === 0x73 && b[3] === 0x6d && b[6] === 1 && b[7] === 0;
}

export function buildArtifact(spec: ArtifactSpec): BuiltArtifact {
  if (spec.layers.length === 0) throw new Error("an artifact needs at least one wasm layer");
  const ref = normalizeReference(spec.name);
  const blobs = spec.layers.map((l) => {
    const data = l.data ?? (l.source ? new Uint8Array(readFileSync(l.source)) : undefined);
    if (!data) throw new Error("an artifact layer needs source or data");
    const mediaType = l.mediaType ?? (isComponent(data) ? WasmMediaType.component : WasmMediaType.wasm);
    return { data, desc: { mediaType, digest: sha256(data), size: data.length } as Descriptor };
  });
  const allComponents = blobs.every((b) => isComponent(b.data));
  const os = spec.os ?? (allComponents ? "wasip2" : "wasip1");

  const runConfig: Record<string, unknown> = {};
  if (spec.entrypoint?.length) runConfig.Entrypoint = spec.entrypoint;
  if (spec.cmd?.length) runConfig.Cmd = spec.cmd;
  if (spec.env?.length) runConfig.Env = spec.env;
  const configJson: Record<string, unknown> = {
    created: "1970-01-01T00:00:00Z",
    architecture: "wasm",
    os,
    layerDigests: blobs.map((b) => b.desc.digest),
    ...(allComponents ? { component: { exports: [], imports: [], target: null } } : {}),
    config: runConfig,
    rootfs: { type: "layers", diff_ids: [] },
  };
  const configBytes = json(configJson);
  const configDigest = sha256(configBytes);
  const configMediaType = spec.configMediaType === "oci" ? MediaType.config : WasmMediaType.config;

  const manifestJson: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: MediaType.manifest,
    ...(configMediaType === WasmMediaType.config ? { artifactType: WasmMediaType.config } : {}),
    config: { mediaType: configMediaType, digest: configDigest, size: configBytes.length },
    layers: blobs.map((b) => b.desc),
  };
  const manifestBytes = json(manifestJson);
  const manifestDigest = sha256(manifestBytes);

  const indexAnnotations: Record<string, string> = { [Annotation.containerdImageName]: ref.full };
  if (ref.tag) indexAnnotations[Annotation.refName] = ref.tag;
  const indexJson = {
    schemaVersion: 2,
    mediaType: MediaType.index,
    manifests: [
      {
        mediaType: MediaType.manifest,
        digest: manifestDigest,
        size: manifestBytes.length,
        platform: { os, architecture: "wasm" },
        annotations: indexAnnotations,
      },
    ],
  };

  const blob = (digest: Digest, data: Uint8Array): TarEntry => ({
    type: "file",
    path: `blobs/sha256/${digestHex(digest)}`,
    data,
    mode: 0o444,
  });
  const seen = new Set<string>();
  const entries: TarEntry[] = [
    { type: "file", path: "oci-layout", data: json({ imageLayoutVersion: "1.0.0" }), mode: 0o444 },
    { type: "file", path: "index.json", data: json(indexJson), mode: 0o444 },
    { type: "dir", path: "blobs", mode: 0o755 },
    { type: "dir", path: "blobs/sha256", mode: 0o755 },
    blob(configDigest, configBytes),
    blob(manifestDigest, manifestBytes),
  ];
  for (const b of blobs) {
    if (seen.has(b.desc.digest)) continue; // the same wasm twice is one blob
    seen.add(b.desc.digest);
    entries.push(blob(b.desc.digest, b.data));
  }
  return {
    name: ref.full,
    tag: ref.tag,
    layers: blobs.map((b) => b.desc),
    config: { digest: configDigest, bytes: configBytes, json: configJson, mediaType: configMediaType },
    manifest: { digest: manifestDigest, bytes: manifestBytes, json: manifestJson },
    entries,
  };
}

export function writeArtifactArchive(path: string, spec: ArtifactSpec): BuiltArtifact {
  const a = buildArtifact(spec);
  writeFileSync(path, writeTar(a.entries));
  return a;
}
