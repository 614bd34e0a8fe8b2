// Content digests as OCI writes them: "sha256:<lower hex>".

export type Digest = `sha256:${string}`;

export function sha256(data: Uint8Array | string): Digest {
  return `sha256:${new Bun.CryptoHasher("sha256").update(data as Uint8Array<ArrayBuffer> | string).digest("hex")}`;
}

/** The hex part of a digest, i.e. the blob's file name under blobs/sha256/. */
export function digestHex(d: Digest): string {
  return d.slice("sha256:".length);
}
