// An OCI distribution registry on 127.0.0.1 that serves a fixed set of images built by
// tools/image (manifests by tag and by digest, blobs by digest, HEAD as GET without a body).
// containerd reaches it as a mirror (a hosts.toml per upstream host, mirrorHostsDir): the
// path it asks for carries the repository without the host, so an image is filed under its
// repository and tag only (`registry.k8s.io/pause:3.9` and `k8s.gcr.io/pause:3.9` are one
// image, as a mirror of both would serve). Anything else answers 404, so nothing outside
// the test can be pulled through it.
//
//   const reg = ociRegistry(images);             // BuiltImage[]
//   mirrorHostsDir(dir, ["registry.k8s.io"], reg.host);
//   reg.requested;                               // the manifests containerd asked for
//   reg.stop();

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { BuiltImage } from "../../tools/image/index.ts";

export interface OciRegistry {
  /** host:port, for a hosts.toml's host entry. */
  readonly host: string;
  /** Every manifest path asked for (repository:reference), in order, known or not. */
  readonly requested: string[];
  stop(): void;
}

/** "registry.k8s.io/e2e-test-images/busybox:1.29-2" → ["e2e-test-images/busybox", "1.29-2"]. */
function repositoryAndTag(fullName: string): [string, string] {
  const slash = fullName.indexOf("/");
  const rest = fullName.slice(slash + 1);
  const colon = rest.lastIndexOf(":");
  if (colon < 0 || rest.includes("@")) throw new Error(`${fullName}: an image served by tag needs one`);
  return [rest.slice(0, colon), rest.slice(colon + 1)];
}

export function ociRegistry(images: BuiltImage[]): OciRegistry {
  const manifests = new Map<string, BuiltImage>();
  const blobs = new Map<string, Uint8Array>();
  for (const image of images) {
    const [repo, tag] = repositoryAndTag(image.name);
    manifests.set(`${repo}:${tag}`, image);
    manifests.set(`${repo}@${image.manifest.digest}`, image);
    blobs.set(image.config.digest, image.config.bytes);
    blobs.set(image.layer.digest, image.layer.blob);
    blobs.set(image.manifest.digest, image.manifest.bytes);
  }
  const requested: string[] = [];
  const reply = (req: Request, body: Uint8Array, type: string, digest: string) =>
    new Response(req.method === "HEAD" ? null : body, {
      headers: { "content-type": type, "docker-content-digest": digest, "content-length": String(body.length) },
    });
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const path = new URL(req.url).pathname;
      if (path === "/v2/" || path === "/v2") return Response.json({});
      const m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(path);
      if (m) {
        const [, repo, ref] = m as unknown as [string, string, string];
        const key = ref.startsWith("sha256:") ? `${repo}@${ref}` : `${repo}:${ref}`;
        requested.push(key);
        const image = manifests.get(key);
        if (!image) return Response.json({ errors: [{ code: "MANIFEST_UNKNOWN", message: key }] }, { status: 404 });
        return reply(req, image.manifest.bytes, String(image.manifest.json.mediaType), image.manifest.digest);
      }
      const blob = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path)?.[1];
      const data = blob ? blobs.get(blob) : undefined;
      if (blob && data) return reply(req, data, "application/octet-stream", blob);
      return Response.json({ errors: [{ code: "BLOB_UNKNOWN", message: path }] }, { status: 404 });
    },
  });
  return { host: `127.0.0.1:${server.port}`, requested, stop: () => server.stop(true) };
}

/**
 * A registry config_path directory (containerd's hosts.toml layout) in which each of
 * `upstreams` is mirrored by the plain-HTTP registry at `mirror` and by nothing else: a
 * pull of an image the mirror lacks fails rather than reaching the network.
 */
export function mirrorHostsDir(dir: string, upstreams: string[], mirror: string): string {
  for (const upstream of upstreams) {
    mkdirSync(join(dir, upstream), { recursive: true });
    writeFileSync(
      join(dir, upstream, "hosts.toml"),
      `server = "http://${mirror}"\n\n[host."http://${mirror}"]\n  capabilities = ["pull", "resolve"]\n`,
    );
  }
  return dir;
}
