// The thread-pool rule, checked (docs/ARCHITECTURE.md, "Bun's thread pool"): no module that a
// shim server or an executor loads may import node:fs/promises or call an asynchronous
// node:fs function (or Bun.write, or read a Bun.file as a whole), since the first such call
// starts Bun's thread pool, whose threads then stay for the process's life.
//
//   bun scripts/check-thread-pool.ts      exits 1 naming each use and how the process loads it
//
// What those processes load is followed from their entries through static imports and
// re-exports, literal dynamic imports and require() calls, and scripts named by
// `new URL("./x.ts", import.meta.url)` (a Worker runs in the same process), except the command
// line's (OTHER_PROCESSES). Type-only imports are not loaded, and are not followed. The
// daemon is not checked: it keeps Bun's thread pool by design (src/linux/proc-async.ts).

import { existsSync, readFileSync } from "node:fs";
import { dirname, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");

/** What the normal-mode shim binary starts with, and what runShim loads by path in its server and its executor. */
export const ENTRIES = ["src/bin/containerd-shim-wasmtime-v1.ts", "src/shim/serve.ts", "src/engines/executor.ts"];

/**
 * Scripts named by path that neither process loads: the command line (start, delete) is a
 * short-lived process of its own, which runShim loads by path only there (src/shim/scripts.ts
 * names it beside the server's script).
 */
export const OTHER_PROCESSES = ["src/shim/command-line.ts"];

/**
 * Uses that are there by design, each with why it does not start the pool in a server's or an
 * executor's ordinary life. `count` is how many such uses the file has: one more fails.
 */
export const ALLOWED: readonly { file: string; use: string; count: number; why: string }[] = [
  {
    file: "src/engines/cache.ts",
    use: 'import("node:fs/promises")',
    count: 1,
    why: "the cache's writes (put, evict): a server writes once per module and node, on a compile miss; the executor has no cache",
  },
  {
    file: "src/engines/wasmtime/engine.ts",
    use: 'import("node:fs/promises")',
    count: 1,
    why: "Runner.run's read of an artifact: the daemon's path, and the executor's Worker fallback; the executor's own path (executeHere) reads synchronously",
  },
  {
    file: "src/engines/module-file.ts",
    use: 'import("node:fs/promises")',
    count: 1,
    why: "readModulePath, the daemon's read of a module at Start (Runner.run); the executor and a server call only the synchronous readers",
  },
];

/** node:fs functions that run on Bun's thread pool: every one without a Sync twin's name, and the streams. */
const ASYNC_FS = new Set([
  "access",
  "appendFile",
  "chmod",
  "chown",
  "close",
  "copyFile",
  "cp",
  "exists",
  "fchmod",
  "fchown",
  "fdatasync",
  "fstat",
  "fsync",
  "ftruncate",
  "futimes",
  "lchmod",
  "lchown",
  "link",
  "lstat",
  "lutimes",
  "mkdir",
  "mkdtemp",
  "open",
  "openAsBlob",
  "opendir",
  "read",
  "readdir",
  "readFile",
  "readlink",
  "readv",
  "realpath",
  "rename",
  "rm",
  "rmdir",
  "stat",
  "statfs",
  "symlink",
  "truncate",
  "unlink",
  "utimes",
  "write",
  "writeFile",
  "writev",
  "createReadStream",
  "createWriteStream",
  "promises",
]);

const FS_MODULES = new Set(["node:fs", "fs"]);
const FS_PROMISES = new Set(["node:fs/promises", "fs/promises"]);

const transpiler = new Bun.Transpiler({ loader: "ts" });

/**
 * The uses of asynchronous file I/O in one module's source (TypeScript), each as what the
 * module does: `import("node:fs/promises")`, `readFile`, `fs.stat`, `Bun.write(`. Loads of
 * node:fs/promises come first, then the rest in the order they appear.
 */
export function asyncFsUses(source: string): string[] {
  // Transpiled: comments and type-only imports gone, the rest as the runtime sees it.
  const js = transpiler.transformSync(source);
  const out: { use: string; at: number }[] = [];
  const add = (use: string, at: number) => out.push({ use, at });
  const str = `["']([^"']+)["']`;

  // The parser's view of what the module loads (strings and comments that name a module are not loads).
  const forms: Record<string, (path: string) => string> = {
    "import-statement": (p) => `import from "${p}"`,
    "dynamic-import": (p) => `import("${p}")`,
    "require-call": (p) => `require("${p}")`,
  };
  for (const i of transpiler.scanImports(source)) {
    const form = forms[i.kind];
    if (form && FS_PROMISES.has(i.path)) add(form(i.path), -1);
  }

  // Names bound to node:fs itself, and the functions imported from it by name.
  const modules: string[] = [];
  const functions = new Map<string, string>(); // local name → node:fs name
  const named = (list: string, sep: RegExp) => {
    for (const part of list.split(",")) {
      const [name, local] = part.trim().split(sep);
      if (name) functions.set((local ?? name).trim(), name.trim());
    }
  };
  for (const m of js.matchAll(new RegExp(String.raw`\bimport\s+([^;]*?)\s+from\s*${str}`, "g"))) {
    if (!FS_MODULES.has(m[2] as string)) continue;
    const clause = m[1] as string;
    const ns = /\*\s*as\s+([\w$]+)/.exec(clause);
    if (ns) modules.push(ns[1] as string);
    const def = /^([\w$]+)/.exec(clause);
    if (def) modules.push(def[1] as string);
    const braces = /\{([^}]*)\}/.exec(clause);
    if (braces) named(braces[1] as string, /\s+as\s+/);
  }
  for (const m of js.matchAll(new RegExp(String.raw`\b(?:const|let|var)\s+(\{[^}]*\}|[\w$]+)\s*=\s*require\s*\(\s*${str}\s*\)`, "g"))) {
    if (!FS_MODULES.has(m[2] as string)) continue;
    const target = m[1] as string;
    if (target.startsWith("{")) named(target.slice(1, -1), /\s*:\s*/);
    else modules.push(target);
  }
  for (const m of js.matchAll(new RegExp(String.raw`\brequire\s*\(\s*${str}\s*\)\s*\.\s*([\w$]+)`, "g"))) {
    if (FS_MODULES.has(m[1] as string) && ASYNC_FS.has(m[2] as string)) add(`require("${m[1]}").${m[2]}`, m.index);
  }
  for (const [local, name] of functions) {
    if (!ASYNC_FS.has(name)) continue;
    // A call, or the function handed on (to promisify, or as a callback).
    for (const m of js.matchAll(new RegExp(String.raw`(?<![\w$.])${literal(local)}\b(?!\s*[:=]|\s+as\b)`, "g"))) {
      if (isImportLine(js, m.index)) continue;
      add(name === local ? name : `${local} (${name})`, m.index);
    }
  }
  for (const ns of modules) {
    for (const m of js.matchAll(new RegExp(String.raw`(?<![\w$.])${literal(ns)}\s*\.\s*([\w$]+)`, "g"))) {
      if (ASYNC_FS.has(m[1] as string)) add(`${ns}.${m[1]}`, m.index);
    }
  }

  for (const m of js.matchAll(/\bBun\s*\.\s*write\s*\(/g)) add("Bun.write(", m.index);
  for (const m of js.matchAll(/\bBun\s*\.\s*file\s*\([^)]*\)\s*\.\s*(text|json|arrayBuffer|bytes)\s*\(/g))
    add(`Bun.file(…).${m[1]}(`, m.index);
  return out.sort((a, b) => a.at - b.at).map((u) => u.use);
}

function literal(s: string): string {
  return s.replace(/[$]/g, "\\$");
}

function isImportLine(js: string, at: number): boolean {
  const start = js.lastIndexOf("\n", at) + 1;
  return /^\s*(import|export)\b|=\s*require\s*\(/.test(js.slice(start, js.indexOf("\n", at) === -1 ? undefined : js.indexOf("\n", at)));
}

/** The lines of `source` (1-based, comments left out) where `use` appears to be: for the message only. */
function sourceLines(source: string, use: string): number[] {
  const token = /"([^"]+)"/.exec(use)?.[1] ?? /([\w$]+)\(?$/.exec(use.replace(/ \(.*\)$/, ""))?.[1] ?? use;
  return source
    .split("\n")
    .map((text, i) => ({ text: text.trim(), line: i + 1 }))
    .filter(({ text }) => !/^(\/\/|\/?\*)/.test(text) && text.includes(token))
    .map(({ line }) => line);
}

/** The modules of this repository that `file` loads (resolved paths that exist). */
export function loads(file: string): string[] {
  const source = readFileSync(file, "utf8");
  const out: string[] = [];
  for (const i of transpiler.scanImports(source)) {
    if (!i.path.startsWith(".")) continue;
    out.push(resolve(dirname(file), i.path));
  }
  // A script named beside this module and loaded by path (a Worker's: a thread of the same
  // process; src/engines/wasmtime/scripts.ts, src/shim/scripts.ts).
  for (const m of source.matchAll(/\bnew URL\(\s*["'](\.{1,2}\/[^"']+)["']\s*,\s*import\.meta\.url\s*\)/g))
    out.push(resolve(dirname(file), m[1]!));
  return out.filter((p) => existsSync(p));
}

/** Every module the entries load, each with the module that first led to it. */
export function graph(entries: readonly string[]): Map<string, string | undefined> {
  const seen = new Map<string, string | undefined>();
  const todo = entries.map((e) => resolve(ROOT, e));
  for (const e of todo) seen.set(e, undefined);
  const other = new Set(OTHER_PROCESSES.map((p) => resolve(ROOT, p)));
  while (todo.length > 0) {
    const file = todo.pop() as string;
    for (const next of loads(file)) {
      if (seen.has(next) || other.has(next)) continue;
      seen.set(next, file);
      todo.push(next);
    }
  }
  return seen;
}

/** The rule's failures, one line each; empty when it holds. */
export function check(entries: readonly string[] = ENTRIES, allowed = ALLOWED): string[] {
  const g = graph(entries);
  const rel = (p: string) => relative(ROOT, p);
  const chain = (p: string): string => {
    const via: string[] = [];
    for (let at: string | undefined = p; at !== undefined; at = g.get(at)) via.unshift(rel(at));
    return via.join(" → ");
  };
  const failures: string[] = [];
  const found = new Map<string, number>(); // `${file}\0${use}` → uses
  for (const file of [...g.keys()].sort()) {
    const uses = asyncFsUses(readFileSync(file, "utf8"));
    const count = new Map<string, number>();
    for (const u of uses) count.set(u, (count.get(u) ?? 0) + 1);
    for (const [use, n] of count) {
      found.set(`${rel(file)}\0${use}`, n);
      const ok = allowed.find((a) => a.file === rel(file) && a.use === use);
      if (ok && n <= ok.count) continue;
      const lines = sourceLines(readFileSync(file, "utf8"), use);
      failures.push(`${rel(file)}${lines.length ? `:${lines.join(",")}` : ""}: ${use}, loaded by ${chain(file)}`);
    }
  }
  // An allowance outlives its use only until the next run: then it would hide a new one.
  for (const a of allowed) {
    const n = found.get(`${a.file}\0${a.use}`) ?? 0;
    if (n < a.count)
      failures.push(`${a.file}: allowed ${a.count} × ${a.use}, found ${n}: lower the count in ALLOWED (scripts/check-thread-pool.ts)`);
  }
  return failures;
}

if (import.meta.main) {
  const failures = check();
  if (failures.length > 0) {
    console.error('Asynchronous file I/O in a module a shim server or an executor loads (docs/ARCHITECTURE.md, "Bun\'s thread pool"):');
    for (const f of failures) console.error(`  ${f}`);
    process.exit(1);
  }
  console.log(`thread-pool rule holds: ${graph(ENTRIES).size} modules of the shim server and the executor checked`);
}
