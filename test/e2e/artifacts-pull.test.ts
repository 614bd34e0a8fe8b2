// OCI wasm artifacts pulled the way a node gets them: `crictl pull` from a registry (a small
// read-only OCI distribution server in this process, plain HTTP on loopback, named to the CRI
// through a hosts.toml), then run. containerd 1.7 and 2.x pull them and our shim runs the
// pulled image; Debian's 1.6.20 cannot pull them at all: its CRI unpacks every pulled image and
// refuses one whose manifest has layers its config's rootfs does not list ("mismatched image
// rootfs and manifest layers"; containerd fixed this in 1.6.25/1.7.7, as runwasi's docs say).
// On 1.6.20 an artifact is usable only imported with `ctr images import --no-unpack`
// (test/e2e/artifacts.test.ts).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type BuiltArtifact, buildArtifact } from "../../tools/image/artifact.ts";
import { type CriEnv, criEnv } from "../support/cri.ts";
import { REPO, WASM } from "../support/shim-env.ts";

const T = 180_000;
const V2 = /^PINNED=\(([^)]*)\)/m
  .exec(readFileSync(join(REPO, "scripts/containerd-versions.sh"), "utf8"))?.[1]
  ?.trim()
  .split(/\s+/)
  .find((x) => x.startsWith("v2.")) as string;

/** A registry serving one artifact under every name and tag: /v2/, manifests, blobs. */
function registry(a: BuiltArtifact): { host: string; stop(): void } {
  const blobs = new Map<string, Uint8Array>();
  for (const e of a.entries) if (e.type === "file" && e.path.startsWith("blobs/sha256/")) blobs.set(`sha256:${e.path.slice(13)}`, e.data);
  const reply = (req: Request, body: Uint8Array, type: string, digest: string) =>
    new Response(req.method === "HEAD" ? null : body, {
      headers: { "content-type": type, "docker-content-digest": digest, "content-length": String(body.length) },
    });
  const srv = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch(req) {
      const path = new URL(req.url).pathname;
      if (path === "/v2/") return new Response("{}", { headers: { "content-type": "application/json" } });
      if (/^\/v2\/.+\/manifests\/[^/]+$/.test(path))
        return reply(req, a.manifest.bytes, "application/vnd.oci.image.manifest.v1+json", a.manifest.digest);
      const blob = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path)?.[1];
      if (blob && blobs.has(blob)) return reply(req, blobs.get(blob) as Uint8Array, "application/octet-stream", blob);
      return new Response("not found", { status: 404 });
    },
  });
  return { host: `127.0.0.1:${srv.port}`, stop: () => srv.stop(true) };
}

const CONTAINERDS = [
  { name: "1.6 (Debian)", binary: "/usr/bin/containerd", pulls: false },
  { name: "v1.7.35", binary: join(REPO, "build/containerd/v1.7.35/bin/containerd"), pulls: true },
  { name: V2, binary: join(REPO, "build/containerd", V2, "bin/containerd"), pulls: true },
];

for (const c of CONTAINERDS) {
  describe(`crictl pull of an OCI wasm artifact, containerd ${c.name}`, () => {
    let cri: CriEnv;
    let reg: ReturnType<typeof registry>;
    let ref: string;
    let certs: string;

    beforeAll(async () => {
      const artifact = buildArtifact({
        name: "pulled:1",
        layers: [{ source: join(WASM, "wasi-demo-app.wasm") }],
        entrypoint: ["/demo.wasm"],
      });
      reg = registry(artifact);
      ref = `${reg.host}/bunwasi/pulled:1`;
      certs = join("/tmp", `bwr-${process.pid}-${c.name.replace(/\W/g, "")}`);
      mkdirSync(join(certs, reg.host), { recursive: true });
      writeFileSync(
        join(certs, reg.host, "hosts.toml"),
        `server = "http://${reg.host}"\n[host."http://${reg.host}"]\n  capabilities = ["pull", "resolve"]\n`,
      );
      cri = await criEnv({ binary: c.binary, registryConfigPath: certs });
    }, T);

    afterAll(async () => {
      await cri?.stop();
      reg?.stop();
      if (certs) rmSync(certs, { recursive: true, force: true });
    }, T);

    test(
      c.pulls ? "pulled, then a container of it runs" : "the pull fails: 1.6.20 unpacks it and refuses the wasm layers",
      async () => {
        // crictl runs asynchronously: the registry answers from this process.
        const r = await cri.crictl(["pull", ref]);
        if (!c.pulls) {
          expect(r.code).not.toBe(0);
          expect(r.stderr).toContain("mismatched image rootfs and manifest layers");
          return;
        }
        expect(r.code).toBe(0);
        const pod = await cri.runPod("pulled");
        const id = await cri.createContainer(pod, {
          metadata: { name: "pulled" },
          image: { image: ref },
          args: ["echo", "pulled"],
          log_path: "pulled.log",
        });
        await cri.crictlOk(["start", id]);
        const st = await cri.waitState(id, "CONTAINER_EXITED", 60_000);
        expect(st.status.exitCode).toBe(0);
        const out = readFileSync(join(pod.logDir, "pulled.log"), "utf8")
          .split("\n")
          .filter(Boolean)
          .map((l) => l.split(" ").slice(3).join(" "));
        expect(out).toEqual(["pulled", "exiting"]);
      },
      T,
    );
  });
}
