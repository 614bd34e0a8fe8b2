// src/ttrpc as the package another Bun shim installs: build it, pack it into a tarball,
// install that tarball into an empty project (offline: its peer @bufbuild/protobuf is
// packed from our own node_modules, and the registry is pointed at a closed port so any
// lookup would fail), type-check a program there that imports only "@bunwasi/ttrpc",
// and run it: real calls through the installed copy.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { cpSync, existsSync, lstatSync, readdirSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { tempDir } from "../support/tmp.ts";

const ROOT = resolve(import.meta.dir, "../..");
const PKG_DIR = join(ROOT, "src/ttrpc");
const PROTOBUF_DIR = join(ROOT, "node_modules/@bufbuild/protobuf");
const TSC = join(ROOT, "node_modules/typescript/bin/tsc");
const bun = process.execPath;

const work = tempDir("bunwasi-pkg-");
const project = join(work.path, "consumer");
afterAll(() => work.cleanup());

async function run(cmd: string[], cwd: string, env: Record<string, string> = {}): Promise<string> {
  const proc = Bun.spawn(cmd, { cwd, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} (in ${cwd}) exited ${code}:\n${out}${err}`);
  return out;
}

/** Packs the package in `dir` into `dest` and returns the tarball's path. */
async function pack(dir: string, dest: string): Promise<string> {
  const before = new Set(readdirSync(dest));
  await run([bun, "pm", "pack", "--destination", dest, "--ignore-scripts", "--quiet"], dir);
  const made = readdirSync(dest).filter((f) => f.endsWith(".tgz") && !before.has(f));
  if (made.length !== 1) throw new Error(`expected one new tarball in ${dest}, got ${made.join(", ") || "none"}`);
  return join(dest, made[0]!);
}

let tarball = "";

beforeAll(async () => {
  await run([bun, "run", "build"], PKG_DIR);
  tarball = await pack(PKG_DIR, work.path);
  const protobufVersion = JSON.parse(readFileSync(join(PROTOBUF_DIR, "package.json"), "utf8")).version;
  const protobuf = await pack(PROTOBUF_DIR, work.path);

  cpSync(join(import.meta.dir, "consumer"), project, { recursive: true });
  cpSync(join(ROOT, "test/interop/gen/echo.ts"), join(project, "echo.ts"));
  writeFileSync(
    join(project, "package.json"),
    JSON.stringify({
      name: "consumer",
      private: true,
      type: "module",
      dependencies: { "@bunwasi/ttrpc": `file:${tarball}`, "@bufbuild/protobuf": `file:${protobuf}` },
    }),
  );
  // The version we pin must be the one the package asks for as a peer.
  expect(protobufVersion).toBe(JSON.parse(readFileSync(join(PKG_DIR, "package.json"), "utf8")).peerDependencies["@bufbuild/protobuf"]);
  await run([bun, "install", "--no-cache"], project, {
    BUN_CONFIG_REGISTRY: "http://127.0.0.1:9/",
    NPM_CONFIG_REGISTRY: "http://127.0.0.1:9/",
  });
}, 120_000);

test("the tarball holds the built files and the manifest the issue asks for", async () => {
  const manifest = JSON.parse(readFileSync(join(PKG_DIR, "package.json"), "utf8"));
  const rootManifest = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  expect(manifest.name).toBe("@bunwasi/ttrpc");
  expect(manifest.type).toBe("module");
  expect(manifest.exports["."]).toEqual({ types: "./dist/index.d.ts", default: "./dist/index.js" });
  expect(manifest.engines.bun).toBeString();
  expect(manifest.peerDependencies["@bufbuild/protobuf"]).toBe(rootManifest.dependencies["@bufbuild/protobuf"]);
  const listing = (await run(["tar", "tzf", tarball], work.path)).split("\n").filter(Boolean);
  expect(listing).toContain("package/package.json");
  expect(listing).toContain("package/README.md");
  expect(listing).toContain("package/dist/index.js");
  expect(listing).toContain("package/dist/index.d.ts");
  // Built output only: no TypeScript sources, tests or build script.
  expect(listing.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))).toEqual([]);
});

test("the installed package is a copy whose exports resolve to built JS and .d.ts", () => {
  const installed = join(project, "node_modules/@bunwasi/ttrpc");
  expect(lstatSync(installed).isSymbolicLink()).toBe(false);
  expect(realpathSync(installed).startsWith(realpathSync(project))).toBe(true);
  expect(Bun.resolveSync("@bunwasi/ttrpc", project)).toBe(join(installed, "dist/index.js"));
  expect(existsSync(join(installed, "dist/index.d.ts"))).toBe(true);
  // The .d.ts files point at each other as ".js", which every moduleResolution maps to .d.ts.
  expect(readFileSync(join(installed, "dist/index.d.ts"), "utf8")).not.toContain('.ts"');
});

for (const resolution of ["bundler", "nodenext"]) {
  test(`tsc type-checks the consumer against the installed .d.ts (moduleResolution ${resolution})`, async () => {
    const config = join(project, `tsconfig.${resolution}.json`);
    writeFileSync(
      config,
      JSON.stringify({
        compilerOptions: {
          target: "ESNext",
          module: resolution === "bundler" ? "ESNext" : "NodeNext",
          moduleResolution: resolution,
          lib: ["ESNext", "DOM"],
          types: [],
          strict: true,
          noEmit: true,
          allowImportingTsExtensions: true,
          skipLibCheck: false,
        },
        files: ["main.ts"],
      }),
    );
    const files = await run([bun, TSC, "-p", config, "--listFiles"], project);
    // The package's types came from the installed copy, not from the repository's sources.
    expect(files).toContain(join(project, "node_modules/@bunwasi/ttrpc/dist/index.d.ts"));
    expect(files).not.toContain(PKG_DIR);
  }, 60_000);
}

test("a server and a client from the installed package round-trip every kind of call", async () => {
  const out = await run([bun, "main.ts"], project);
  const result = JSON.parse(out.trim().split("\n").at(-1)!);
  expect(result).toEqual({
    unary: "pkg:hello",
    seq: 0,
    stream: ["0:s", "1:s", "2:s"],
    clientStream: { payload: "abc", n: 3 },
    bidi: ["X", "Y"],
    error: { code: 5, message: "nothing here" },
    interceptors: { client: ["Unary", "ServerStream"], server: ["Unary", "ServerStream"] },
  });
}, 60_000);
