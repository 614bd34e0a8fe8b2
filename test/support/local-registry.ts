// An npm registry on 127.0.0.1 that knows only the tarballs it is given: `bun install` in a
// test project then resolves packages by name and version range, dependencies of dependencies
// included, exactly as from the public registry, and nothing outside the test can be fetched
// (any other name answers 404, so the install fails).
//
//   const reg = localRegistry([tarball, …]);    // each a `bun pm pack` output
//   await run(["bun", "install"], dir, reg.env); // BUN_CONFIG_REGISTRY / NPM_CONFIG_REGISTRY
//   reg.requested;                              // the names bun asked for
//   reg.stop();

import { readFileSync } from "node:fs";
import { basename } from "node:path";

export interface LocalRegistry {
  readonly url: string;
  /** Environment that points bun (and npm) at this registry. */
  readonly env: Record<string, string>;
  /** Every package name asked for, in order (known or not). */
  readonly requested: string[];
  stop(): void;
}

interface Entry {
  manifest: Record<string, unknown> & { name: string; version: string };
  tarball: Uint8Array;
  file: string;
}

/** The package.json inside a packed tarball. */
export function tarballManifest(tarball: string): Record<string, unknown> & { name: string; version: string } {
  const r = Bun.spawnSync(["tar", "-xOzf", tarball, "package/package.json"], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${tarball}: no package/package.json (${r.stderr.toString()})`);
  return JSON.parse(r.stdout.toString());
}

export function localRegistry(tarballs: string[]): LocalRegistry {
  const packages = new Map<string, Entry[]>();
  for (const file of tarballs) {
    const manifest = tarballManifest(file);
    const list = packages.get(manifest.name) ?? [];
    list.push({ manifest, tarball: readFileSync(file), file: basename(file) });
    packages.set(manifest.name, list);
  }
  const requested: string[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const path = decodeURIComponent(new URL(req.url).pathname.slice(1));
      const tar = /^-\/tarballs\/(.+)$/.exec(path);
      if (tar) {
        const entry = [...packages.values()].flat().find((e) => e.file === tar[1]);
        return entry ? new Response(entry.tarball) : new Response("not found", { status: 404 });
      }
      requested.push(path);
      const list = packages.get(path);
      if (!list) return Response.json({ error: "not found" }, { status: 404 });
      const versions: Record<string, unknown> = {};
      for (const e of list) {
        versions[e.manifest.version] = {
          ...e.manifest,
          dist: {
            tarball: `${url}-/tarballs/${e.file}`,
            integrity: `sha512-${new Bun.CryptoHasher("sha512").update(e.tarball).digest("base64")}`,
            shasum: new Bun.CryptoHasher("sha1").update(e.tarball).digest("hex"),
          },
        };
      }
      const latest = list.at(-1)!.manifest.version;
      return Response.json({ name: path, "dist-tags": { latest }, versions });
    },
  });
  const url = `http://127.0.0.1:${server.port}/`;
  return {
    url,
    env: { BUN_CONFIG_REGISTRY: url, NPM_CONFIG_REGISTRY: url },
    requested,
    stop: () => server.stop(true),
  };
}
