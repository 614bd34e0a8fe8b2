// Builds the publishable @bunwasi/shim into dist/ (run `bun dist.ts` here, or `bun run build`).
//
// The package is the shim's sources built module by module, not bundled: runShim and the
// wasmtime engine load some of their own modules by path at run time (the command line, the
// server, the Worker scripts: ../shim/scripts.ts, ../engines/wasmtime/scripts.ts), relative to
// the module that loads them, so the built tree keeps the source tree's shape (dist/shim/…,
// dist/engines/…, the entries in dist/package/). A user's `bun build --compile` bundles it
// again (./build.ts). tsc emits the .js and .d.ts; then:
// - ttrpc is the @bunwasi/ttrpc package, a dependency: its modules are not shipped, and every
//   import of them becomes an import of the package (each name checked against its index);
// - the paths in code that names a module ("./x.ts" in imports, require and
//   `new URL(…, import.meta.url)`) become "./x.js", each checked to name a built file;
// - only the declarations the public entries reach are kept: nothing else is the package's API.

import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";

const here = import.meta.dir;
const src = resolve(here, "..");
const dist = join(here, "dist");
const ttrpcDir = join(dist, "ttrpc");
const TTRPC_PACKAGE = "@bunwasi/ttrpc";

/** The package's public entry points (package.json `exports`), relative to dist. */
const ENTRIES = ["package/index", "package/wasmtime", "package/build"];
const BIN = "package/bunwasi-build.js";

export async function build(): Promise<void> {
  rmSync(dist, { recursive: true, force: true });

  // tsc is found the way Node would find it from here: the package's own devDependency or,
  // inside the bunwasi repository, the root one.
  const tsc = createRequire(join(here, "package.json")).resolve("typescript/bin/tsc");
  const emit = Bun.spawnSync([process.execPath, tsc, "-p", join(here, "tsconfig.json")], { stdout: "inherit", stderr: "inherit" });
  if (emit.exitCode !== 0) throw new Error(`@bunwasi/shim: tsc exited with ${emit.exitCode}`);

  const ttrpcNames = new Set(Object.keys(await import(join(src, "ttrpc/index.ts"))));
  rmSync(ttrpcDir, { recursive: true, force: true });

  const files = [...walk(dist)];
  for (const file of files) {
    if (file.endsWith(".d.ts")) rewrite(file, ttrpcNames, true);
    else if (file.endsWith(".js")) rewrite(file, ttrpcNames, false);
  }
  pruneDeclarations(files.filter((f) => f.endsWith(".d.ts")));
  chmodSync(join(dist, BIN), 0o755);

  const stray = [...walk(dist)].filter((f) => !f.endsWith(".js") && !f.endsWith(".d.ts"));
  if (stray.length) throw new Error(`@bunwasi/shim: unexpected files in dist: ${stray.join(", ")}`);
}

// A module path in code: `from "…"`, `import "…"`, `import("…")`, `require("…")`, `new URL("…"`.
const MODULE_PATH = /(\bfrom\s*|\bimport\s*\(?\s*|\brequire\(\s*|\bnew URL\(\s*)(["'])(\.{1,2}\/[^"'\n]*?)\2/g;

/** Rewrites the relative module paths of one emitted file (see the header). */
function rewrite(file: string, ttrpcNames: Set<string>, declaration: boolean): void {
  const dir = dirname(file);
  const lines = readFileSync(file, "utf8").split("\n");
  let changed = false;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (isProse(line)) continue;
    const next = line.replace(MODULE_PATH, (_m, lead: string, q: string, spec: string) => {
      const js = spec.replace(/\.ts$/, ".js");
      const target = resolve(dir, js);
      if (target === join(ttrpcDir, "index.js")) return `${lead}${q}${TTRPC_PACKAGE}${q}`;
      if (target.startsWith(`${ttrpcDir}/`)) {
        // A module importing one ttrpc file directly (to load less): the names must be the package's too.
        const names = /\{([^}]*)\}\s*from\s*$/.exec(line.slice(0, line.indexOf(spec) - 1))?.[1];
        const missing = (names ?? "")
          .split(",")
          .map((n) => n.trim().replace(/^type\s+/, ""))
          .filter((n) => n && !n.includes(" as ") && !ttrpcNames.has(n) && !declaration);
        if (names === undefined || missing.length) {
          throw new Error(`${relative(dist, file)}:${i + 1}: ${spec} is not ${TTRPC_PACKAGE}'s public API (${missing.join(", ")})`);
        }
        return `${lead}${q}${TTRPC_PACKAGE}${q}`;
      }
      const built = declaration ? target.replace(/\.js$/, ".d.ts") : target;
      if (!existsSync(built)) throw new Error(`${relative(dist, file)}:${i + 1}: ${spec} names no built file (${relative(dist, built)})`);
      return `${lead}${q}${js}${q}`;
    });
    if (next !== line) {
      lines[i] = next;
      changed = true;
    }
  }
  if (changed) writeFileSync(file, lines.join("\n"));
}

/** A comment line: prose, whose paths name nothing. */
function isProse(line: string): boolean {
  const t = line.trimStart();
  return t.startsWith("//") || t.startsWith("*") || t.startsWith("/*");
}

function codeLines(text: string): string[] {
  return text.split("\n").filter((l) => !isProse(l));
}

/** Keeps the declarations the entries reach through their imports; removes the rest. */
function pruneDeclarations(all: string[]): void {
  const keep = new Set<string>();
  const queue = ENTRIES.map((e) => join(dist, `${e}.d.ts`));
  while (queue.length) {
    const file = queue.pop()!;
    if (keep.has(file)) continue;
    if (!existsSync(file)) throw new Error(`@bunwasi/shim: no declarations at ${relative(dist, file)}`);
    keep.add(file);
    for (const line of codeLines(readFileSync(file, "utf8"))) {
      for (const m of line.matchAll(MODULE_PATH)) queue.push(resolve(dirname(file), m[3]!.replace(/\.js$/, ".d.ts")));
    }
  }
  for (const f of all) if (!keep.has(f)) rmSync(f);
  // Folders the pruning emptied.
  for (const d of dirsDeepestFirst(dist)) if (readdirSync(d).length === 0) rmSync(d, { recursive: true });
}

function* walk(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(path);
    else yield path;
  }
}

function dirsDeepestFirst(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    out.push(...dirsDeepestFirst(join(dir, entry.name)), join(dir, entry.name));
  }
  return out;
}

if (import.meta.main) await build();
