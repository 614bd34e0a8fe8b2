#!/usr/bin/env bun
// Build an OCI image layout archive for `ctr images import`.
//
//   bun tools/image/cli.ts --name docker.io/library/wasi-demo-app:latest --out img.tar \
//     --file /wasi-demo-app.wasm=build/wasm/wasi-demo-app.wasm --entrypoint /wasi-demo-app.wasm
//   bun tools/image/cli.ts --busybox --out busybox.tar
//   bun tools/image/cli.ts --artifact --name app:1 --out app.tar --wasm build/wasm/wasi-demo-app.wasm --entrypoint /app.wasm
//
// Prints the image name and manifest digest. Exit 2 on bad usage.

import { parseArgs } from "node:util";
import { WasmMediaType, writeArtifactArchive } from "./artifact.ts";
import { busyboxImage } from "./busybox.ts";
import type { LayerItem } from "./layer.ts";
import { type ImageSpec, writeImageArchive } from "./layout.ts";
import { parsePlatform } from "./platform.ts";

const USAGE = `usage: bun tools/image/cli.ts --out FILE.tar (--busybox | --name NAME --file DEST=SRC ... | --artifact --name NAME --wasm FILE ...)

  --name NAME          image name (normalized: busybox → docker.io/library/busybox:latest)
  --out FILE           archive to write (OCI image layout, tar)
  --file DEST=SRC      put host file SRC at DEST in the layer (repeatable; keeps SRC's mode)
  --symlink DEST=TGT   symlink DEST → TGT (repeatable)
  --dir DEST           an (empty) directory (repeatable)
  --entrypoint ARG     entrypoint; repeat for more words, or give a JSON array
  --cmd ARG            cmd; repeat for more words, or give a JSON array; words after -- also count
  --env K=V            environment (repeatable)
  --workdir DIR        working directory
  --user USER          user
  --label K=V          config label (repeatable)
  --annotation K=V     manifest annotation (repeatable)
  --platform OS/ARCH   default linux/<host arch> (runwasi's demo uses wasi/wasm: import needs --all-platforms)
  --no-gzip            store the layer as a plain tar
  --busybox            native busybox image (busybox-static): /bin/busybox + applet links, cmd ["sh"]
  --busybox-path PATH  busybox binary to use (default /bin/busybox)
  --json               print a JSON summary

OCI wasm artifact (no rootfs: the layers are wasm binaries; import with
\`ctr images import --all-platforms --no-unpack\`, run through the CRI):
  --artifact           build an artifact instead of a rootfs image
  --wasm FILE[=TYPE]   a wasm layer (repeatable); TYPE: component, wasm, content or a media type
                       (default: component for a component binary, else wasm)
  --config-type T      wasm (application/vnd.wasm.config.v0+json, default) or oci
  --os OS              the config's os (default wasip2 for components, else wasip1)
  (--entrypoint, --cmd and --env apply too)
`;

function usage(msg?: string): never {
  if (msg) process.stderr.write(`error: ${msg}\n`);
  process.stderr.write(USAGE);
  process.exit(2);
}

function splitPair(s: string, flag: string): [string, string] {
  const eq = s.indexOf("=");
  if (eq <= 0) usage(`${flag} wants KEY=VALUE, got ${JSON.stringify(s)}`);
  return [s.slice(0, eq), s.slice(eq + 1)];
}

function words(values: string[] | undefined): string[] | undefined {
  if (!values || values.length === 0) return undefined;
  if (values.length === 1 && values[0]?.startsWith("[")) {
    const parsed: unknown = JSON.parse(values[0]);
    if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === "string")) usage("JSON form must be an array of strings");
    return parsed;
  }
  return values;
}

export function main(argv: string[]): void {
  let parsed: ReturnType<typeof parse>;
  function parse() {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        name: { type: "string" },
        out: { type: "string" },
        file: { type: "string", multiple: true },
        symlink: { type: "string", multiple: true },
        dir: { type: "string", multiple: true },
        entrypoint: { type: "string", multiple: true },
        cmd: { type: "string", multiple: true },
        env: { type: "string", multiple: true },
        workdir: { type: "string" },
        user: { type: "string" },
        label: { type: "string", multiple: true },
        annotation: { type: "string", multiple: true },
        platform: { type: "string" },
        "no-gzip": { type: "boolean" },
        busybox: { type: "boolean" },
        artifact: { type: "boolean" },
        wasm: { type: "string", multiple: true },
        "config-type": { type: "string" },
        os: { type: "string" },
        "busybox-path": { type: "string" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  }
  try {
    parsed = parse();
  } catch (e) {
    usage((e as Error).message);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (!v.out) usage("--out is required");

  if (v.artifact) {
    if (!v.name) usage("--name is required");
    if (!v.wasm?.length) usage("--artifact needs at least one --wasm FILE");
    const configType = v["config-type"] ?? "wasm";
    if (configType !== "wasm" && configType !== "oci") usage(`--config-type is wasm or oci, not ${configType}`);
    const layers = v.wasm.map((w) => {
      const eq = w.lastIndexOf("=");
      if (eq <= 0) return { source: w };
      const type = w.slice(eq + 1);
      const mediaType = (WasmMediaType as Record<string, string>)[type] ?? type;
      if (!mediaType.includes("/") || type === "config") usage(`--wasm ${w}: unknown layer type ${type}`);
      return { source: w.slice(0, eq), mediaType };
    });
    const a = writeArtifactArchive(v.out, {
      name: v.name,
      layers,
      configMediaType: configType,
      ...(v.os ? { os: v.os } : {}),
      ...(words(v.entrypoint) ? { entrypoint: words(v.entrypoint) } : {}),
      ...(words([...(v.cmd ?? []), ...parsed.positionals]) ? { cmd: words([...(v.cmd ?? []), ...parsed.positionals]) } : {}),
      ...(v.env?.length ? { env: v.env.map((e) => splitPair(e, "--env").join("=")) } : {}),
    });
    const summary = {
      name: a.name,
      out: v.out,
      manifest: a.manifest.digest,
      platform: `${(a.config.json as { os: string }).os}/wasm`,
      config: a.config.mediaType,
      layers: a.layers,
    };
    if (v.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else
      process.stdout.write(
        `${summary.name} ${summary.manifest} ${summary.platform} artifact (${a.layers.length} wasm layer(s)) → ${summary.out}\n`,
      );
    return;
  }

  let spec: ImageSpec;
  if (v.busybox) {
    spec = busyboxImage({ name: v.name, busybox: v["busybox-path"] });
  } else {
    if (!v.name) usage("--name is required");
    spec = { name: v.name, files: [], config: {} };
  }
  const files: LayerItem[] = [...spec.files];
  for (const f of v.file ?? []) {
    const [dest, src] = splitPair(f, "--file");
    files.push({ path: dest, source: src });
  }
  for (const s of v.symlink ?? []) {
    const [dest, target] = splitPair(s, "--symlink");
    files.push({ path: dest, symlink: target });
  }
  for (const d of v.dir ?? []) files.push({ path: d, dir: true });
  if (files.length === 0) usage("the image would be empty: give --file (or --busybox)");

  const config = { ...(spec.config ?? {}) };
  const entrypoint = words(v.entrypoint);
  const cmd = words([...(v.cmd ?? []), ...parsed.positionals]);
  if (entrypoint) config.entrypoint = entrypoint;
  if (cmd) config.cmd = cmd;
  if (v.env?.length) config.env = [...(config.env ?? []), ...v.env.map((e) => splitPair(e, "--env").join("="))];
  if (v.workdir) config.workingDir = v.workdir;
  if (v.user) config.user = v.user;
  if (v.label?.length) config.labels = Object.fromEntries(v.label.map((l) => splitPair(l, "--label")));
  const annotations = v.annotation?.length ? Object.fromEntries(v.annotation.map((a) => splitPair(a, "--annotation"))) : undefined;

  const image = writeImageArchive(v.out, {
    ...spec,
    files,
    config,
    annotations,
    platform: v.platform ? parsePlatform(v.platform) : undefined,
    layer: { gzip: !v["no-gzip"] },
  });
  const cfg = image.config.json as { os: string; architecture: string };
  const summary = {
    name: image.name,
    out: v.out,
    manifest: image.manifest.digest,
    platform: `${cfg.os}/${cfg.architecture}`,
    wasm: image.wasm,
    layer: { mediaType: image.layer.mediaType, size: image.layer.size },
  };
  if (v.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else process.stdout.write(`${summary.name} ${summary.manifest} ${summary.platform}${summary.wasm ? " wasm" : ""} → ${summary.out}\n`);
}

if (import.meta.main) {
  try {
    main(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`error: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
