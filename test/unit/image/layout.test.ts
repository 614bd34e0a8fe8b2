// OCI image layout archives: every descriptor's digest and size match its blob, diff_ids match
// the uncompressed layers, names/annotations/platform are what containerd's import reads.
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  Annotation,
  buildImage,
  busyboxImage,
  imageArchive,
  MediaType,
  normalizeReference,
  readTar,
  sha256,
} from "../../../tools/image/index.ts";
import { tempDir } from "../../support/tmp.ts";

const tmp = tempDir("bunwasi-layout-");
afterAll(() => tmp.cleanup());

const WASM = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]); // empty module
const dec = new TextDecoder();

interface Desc {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string };
  annotations?: Record<string, string>;
}

/** Open an archive and check every descriptor against its blob; returns the parsed parts. */
function openLayout(archive: Uint8Array) {
  const files = new Map<string, Uint8Array>();
  for (const e of readTar(archive)) if (e.type === "file") files.set(e.path, e.data);
  const blob = (d: Desc) => {
    const data = files.get(`blobs/sha256/${d.digest.slice("sha256:".length)}`);
    if (!data) throw new Error(`missing blob ${d.digest}`);
    expect(sha256(data)).toBe(d.digest as `sha256:${string}`);
    expect(data.length).toBe(d.size);
    return data;
  };
  expect(JSON.parse(dec.decode(files.get("oci-layout")))).toEqual({ imageLayoutVersion: "1.0.0" });
  const index = JSON.parse(dec.decode(files.get("index.json"))) as { schemaVersion: number; mediaType: string; manifests: Desc[] };
  expect(index.schemaVersion).toBe(2);
  expect(index.mediaType).toBe(MediaType.index);
  expect(index.manifests).toHaveLength(1);
  const mdesc = index.manifests[0] as Desc;
  const manifest = JSON.parse(dec.decode(blob(mdesc))) as {
    mediaType: string;
    config: Desc;
    layers: Desc[];
    annotations?: Record<string, string>;
  };
  const config = JSON.parse(dec.decode(blob(manifest.config))) as Record<string, any>;
  const layers = manifest.layers.map((l) => blob(l));
  // every blob in the archive is referenced (no strays)
  expect([...files.keys()].filter((k) => k.startsWith("blobs/")).length).toBe(2 + layers.length);
  return { files, index, mdesc, manifest, config, layers };
}

describe("buildImage", () => {
  const { image, archive } = imageArchive({
    name: "wasi-demo-app",
    files: [{ path: "/wasi-demo-app.wasm", data: WASM, mode: 0o755 }],
    config: { entrypoint: ["/wasi-demo-app.wasm"], env: ["A=1"], workingDir: "/" },
  });

  test("digests and sizes in index, manifest and config match the blobs", () => {
    const { mdesc, manifest, config, layers } = openLayout(archive);
    expect(mdesc.mediaType).toBe(MediaType.manifest);
    expect(mdesc.digest).toBe(image.manifest.digest);
    expect(manifest.mediaType).toBe(MediaType.manifest);
    expect(manifest.config.mediaType).toBe(MediaType.config);
    expect(manifest.layers[0]?.mediaType).toBe(MediaType.layerGzip);
    // diff_id is the digest of the uncompressed layer
    const tar = Bun.gunzipSync(layers[0] as Uint8Array<ArrayBuffer>);
    expect(config.rootfs).toEqual({ type: "layers", diff_ids: [sha256(tar)] });
    const inLayer = readTar(tar);
    expect(inLayer.map((e) => [e.type, e.path, e.mode])).toEqual([["file", "wasi-demo-app.wasm", 0o755]]);
  });

  test("names: full name for containerd, tag for ref.name; host platform by default", () => {
    const { mdesc, config } = openLayout(archive);
    expect(mdesc.annotations).toEqual({
      [Annotation.containerdImageName]: "docker.io/library/wasi-demo-app:latest",
      [Annotation.refName]: "latest",
    });
    const arch = process.arch === "x64" ? "amd64" : process.arch;
    expect(mdesc.platform).toEqual({ os: "linux", architecture: arch });
    expect([config.os, config.architecture]).toEqual(["linux", arch]);
  });

  test("config carries entrypoint, env and workdir; wasm entrypoint is marked", () => {
    const { config, manifest } = openLayout(archive);
    expect(config.config).toEqual({
      Entrypoint: ["/wasi-demo-app.wasm"],
      Env: ["A=1"],
      WorkingDir: "/",
      Labels: { [Annotation.wasmVariant]: "compat" },
    });
    expect(manifest.annotations).toEqual({ [Annotation.wasmVariant]: "compat" });
    expect(image.wasm).toBe(true);
  });

  test("is reproducible", () => {
    const again = imageArchive({
      name: "wasi-demo-app",
      files: [{ path: "/wasi-demo-app.wasm", data: WASM, mode: 0o755 }],
      config: { entrypoint: ["/wasi-demo-app.wasm"], env: ["A=1"], workingDir: "/" },
    });
    expect(again.image.manifest.digest).toBe(image.manifest.digest);
    expect(Bun.hash(again.archive)).toBe(Bun.hash(archive));
  });

  test("plain layers, explicit platform, extra annotations", () => {
    const { archive } = imageArchive({
      name: "registry.local:5000/x/y:v1",
      files: [{ path: "a/b/c", data: "x" }],
      platform: { os: "wasi", architecture: "wasm" },
      annotations: { "org.example": "1" },
      layer: { gzip: false },
    });
    const { mdesc, manifest, config, layers } = openLayout(archive);
    expect(manifest.layers[0]?.mediaType).toBe(MediaType.layer);
    expect(config.rootfs.diff_ids).toEqual([manifest.layers[0]?.digest]);
    expect(readTar(layers[0] as Uint8Array).map((e) => e.path)).toEqual(["a/", "a/b/", "a/b/c"]);
    expect(mdesc.platform).toEqual({ os: "wasi", architecture: "wasm" });
    expect(mdesc.annotations?.[Annotation.containerdImageName]).toBe("registry.local:5000/x/y:v1");
    expect(mdesc.annotations?.[Annotation.refName]).toBe("v1");
    expect(manifest.annotations).toEqual({ "org.example": "1" });
    expect(config.config).toEqual({});
  });

  test("native images are not marked wasm", () => {
    const img = buildImage({ name: "n", files: [{ path: "/bin/x", data: "\x7fELF" }], config: { cmd: ["/bin/x"] } });
    expect(img.wasm).toBe(false);
    expect(img.manifest.json.annotations).toBeUndefined();
  });
});

describe("busybox image", () => {
  test("busybox with applet symlinks, cmd sh, PATH", () => {
    const { archive } = imageArchive(busyboxImage());
    const { config, layers, mdesc } = openLayout(archive);
    const entries = readTar(Bun.gunzipSync(layers[0] as Uint8Array<ArrayBuffer>));
    const bb = entries.find((e) => e.path === "bin/busybox");
    expect(bb?.type).toBe("file");
    expect(bb?.mode).toBe(0o755);
    expect(bb?.type === "file" && sha256(bb.data)).toBe(sha256(readFileSync("/bin/busybox")));
    for (const a of ["sh", "echo", "sleep", "cat", "ls", "true", "false"]) {
      expect(entries.find((e) => e.path === `bin/${a}`)).toMatchObject({ type: "symlink", target: "busybox" });
    }
    expect(config.config.Cmd).toEqual(["sh"]);
    expect(config.config.Entrypoint).toBeUndefined();
    expect(config.config.Env[0]).toStartWith("PATH=");
    expect(mdesc.annotations?.[Annotation.containerdImageName]).toBe("docker.io/library/busybox:latest");
  });
});

describe("normalizeReference", () => {
  test.each([
    ["busybox", "docker.io/library/busybox:latest", "latest"],
    ["busybox:1.36", "docker.io/library/busybox:1.36", "1.36"],
    ["me/app", "docker.io/me/app:latest", "latest"],
    ["ghcr.io/containerd/runwasi/wasi-demo-app:latest", "ghcr.io/containerd/runwasi/wasi-demo-app:latest", "latest"],
    ["localhost:5000/a", "localhost:5000/a:latest", "latest"],
    ["localhost/a:b", "localhost/a:b", "b"],
  ])("%s", (input, full, tag) => {
    expect(normalizeReference(input)).toEqual({ full, tag });
  });
  test("rejects junk", () => {
    expect(() => normalizeReference("")).toThrow();
    expect(() => normalizeReference("a b")).toThrow();
  });
});

describe("cli", () => {
  const cli = join(import.meta.dir, "../../../tools/image/cli.ts");
  test("builds a wasm image archive that GNU tar lists", () => {
    const wasm = join(tmp.path, "m.wasm");
    writeFileSync(wasm, WASM);
    const out = join(tmp.path, "cli.tar");
    const r = Bun.spawnSync(
      [
        process.execPath,
        cli,
        "--name",
        "docker.io/library/wasi-demo-app:latest",
        "--out",
        out,
        "--file",
        `/wasi-demo-app.wasm=${wasm}`,
        "--entrypoint",
        "/wasi-demo-app.wasm",
        "--env",
        "K=V",
        "--cmd",
        "a",
        "--cmd",
        "b",
        "--json",
      ],
      { stdout: "pipe", stderr: "pipe" },
    );
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    const summary = JSON.parse(r.stdout.toString());
    expect(summary).toMatchObject({ name: "docker.io/library/wasi-demo-app:latest", wasm: true });
    const list = Bun.spawnSync(["tar", "-tf", out], { stdout: "pipe" }).stdout.toString().trim().split("\n");
    expect(list.slice(0, 4)).toEqual(["oci-layout", "index.json", "blobs/", "blobs/sha256/"]);
    const { config, mdesc } = openLayout(new Uint8Array(readFileSync(out)));
    expect(mdesc.digest).toBe(summary.manifest);
    expect(config.config).toMatchObject({ Entrypoint: ["/wasi-demo-app.wasm"], Cmd: ["a", "b"], Env: ["K=V"] });
  });

  test("usage errors exit 2", () => {
    const r = Bun.spawnSync([process.execPath, cli, "--name", "x"], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(2);
    expect(r.stderr.toString()).toContain("--out is required");
  });
});
