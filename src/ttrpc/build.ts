// Builds the publishable package into dist/: one ESM bundle for Bun (index.js) and the
// .d.ts files tsc emits from the sources. Run with `bun build.ts` in this folder (or
// `bun run build`). Dependencies stay imports (the peer @bufbuild/protobuf, bun:ffi),
// so the consumer's copy of the protobuf runtime is the one used.

import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const here = import.meta.dir;
const dist = join(here, "dist");

export async function build(): Promise<void> {
  rmSync(dist, { recursive: true, force: true });

  const out = await Bun.build({
    entrypoints: [join(here, "index.ts")],
    outdir: dist,
    target: "bun",
    format: "esm",
    packages: "external",
    sourcemap: "linked",
  });
  if (!out.success) throw new AggregateError(out.logs, "ttrpc: bun build failed");

  // tsc is found the way Node would find it from here: the package's own devDependency
  // or, inside the bunwasi repository, the root one.
  const tsc = createRequire(join(here, "package.json")).resolve("typescript/bin/tsc");
  const types = Bun.spawnSync([process.execPath, tsc, "-p", join(here, "tsconfig.json")], { stdout: "inherit", stderr: "inherit" });
  if (types.exitCode !== 0) throw new Error(`ttrpc: tsc exited with ${types.exitCode}`);

  // The sources import each other as "./x.ts" (Bun runs them directly); tsc keeps those
  // specifiers in the .d.ts it emits. Consumers resolve "./x.js" to x.d.ts under every
  // moduleResolution, so that is what the declarations say.
  for (const file of walk(dist)) {
    if (!file.endsWith(".d.ts")) continue;
    const text = readFileSync(file, "utf8");
    const fixed = text.replace(/(from\s+["']\.{1,2}\/[^"']*?)\.ts(["'])/g, "$1.js$2");
    if (fixed !== text) writeFileSync(file, fixed);
  }
}

function* walk(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(path);
    else yield path;
  }
}

if (import.meta.main) await build();
