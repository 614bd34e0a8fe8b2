// OCI image-spec v1 media types, and the annotation keys the image layout uses.

export const MediaType = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: "application/vnd.oci.image.layer.v1.tar",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
} as const;

export const Annotation = {
  /** OCI image layout: the reference (we write the tag, as BuildKit does) of an index.json entry. */
  refName: "org.opencontainers.image.ref.name",
  /** containerd's import takes the full image name from here first. */
  containerdImageName: "io.containerd.image.name",
  /**
   * The wasm image marker used by crun/youki ("compat": a plain layer holding the .wasm file,
   * found through the entrypoint). Informational for us: the shim detects wasm by content.
   */
  wasmVariant: "module.wasm.image/variant",
} as const;
