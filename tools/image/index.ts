// Build OCI image layout archives for `ctr images import`: tar writer, layers, image layout.
export {
  type ArtifactLayer,
  type ArtifactSpec,
  type BuiltArtifact,
  buildArtifact,
  isComponent,
  WasmMediaType,
  writeArtifactArchive,
} from "./artifact.ts";
export { BUSYBOX_APPLETS, busyboxImage } from "./busybox.ts";
export { type Digest, digestHex, sha256 } from "./digest.ts";
export { buildLayer, type Layer, type LayerItem, type LayerOptions, layerEntries } from "./layer.ts";
export {
  type BuiltImage,
  buildImage,
  type Descriptor,
  type ImageConfig,
  type ImageSpec,
  imageArchive,
  startsWasm,
  writeImageArchive,
} from "./layout.ts";
export { Annotation, MediaType } from "./media-types.ts";
export { hostPlatform, type Platform, parsePlatform } from "./platform.ts";
export { normalizeReference, type Reference } from "./reference.ts";
export { readTar, type TarEntry, type TarReadEntry, writeTar } from "./tar.ts";
