// The @bunwasi/shim package used as a stranger uses it, outside this repository: build and
// `npm pack` both packages (the shim and the @bunwasi/ttrpc it depends on), serve the tarballs
// from a registry on 127.0.0.1 that knows nothing else (test/support/local-registry.ts: the
// install resolves names and version ranges as from the public one, and can fetch nothing
// else), and install them into an empty project holding only ./shim-user: a shim with one host function
// (shim.ts, host.ts), its package.json and tsconfig.json, and a guest module (shout.wat).
// Then build it with the package's `bunwasi-build` (`bun run build`), put libwasmtime beside
// it in ../lib as a user would, type-check it, and run the module under a real containerd
// (1.6 and 2.4.2) with the binary's own runtime name: the host function upper-cases the
// guest's text in its memory and returns a count, which the guest prints and exits with.
// Needs root, containerd and runc; never skips.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join, relative, resolve } from "node:path";
import ts from "typescript";
import { writeImageArchive } from "../../tools/image/index.ts";
import { type Containerd, startContainerd } from "../support/containerd.ts";
import { type LocalRegistry, localRegistry } from "../support/local-registry.ts";
import { tempDir } from "../support/tmp.ts";
import { SURFACE } from "./shim-api.ts";

const ROOT = resolve(import.meta.dir, "../..");
const SHIM_DIR = join(ROOT, "src/package");
const TTRPC_DIR = join(ROOT, "src/ttrpc");
const PROTOBUF_DIR = join(ROOT, "node_modules/@bufbuild/protobuf");
const USER_FILES = join(import.meta.dir, "shim-user");
const TSC = join(ROOT, "node_modules/typescript/bin/tsc");
const LIB = join(ROOT, "build/lib");
const V2 = join(ROOT, "build/containerd/v2.4.2/bin/containerd");
const bun = process.execPath;

const BINARY = "containerd-shim-shout-v1";
const RUNTIME = "io.containerd.shout.v1";
const IMAGE = "docker.io/library/bunwasi-shout:latest";
const T = 60_000;

const work = tempDir("bunwasi-shim-pkg-");
const project = join(work.path, "shout-shim");
const installed = join(project, "node_modules/@bunwasi/shim");
let registry: LocalRegistry | undefined;
let shimFiles: string[] = [];
let userEnv: Record<string, string> = {};

async function run(cmd: string[], cwd: string, env: Record<string, string> = {}): Promise<string> {
  const proc = Bun.spawn(cmd, { cwd, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} (in ${cwd}) exited ${code}:\n${out}${err}`);
  return out;
}

/** `npm pack` of the package in `dir` into the work dir: the tarball's path and the files it holds. */
async function npmPack(dir: string): Promise<{ tarball: string; files: string[] }> {
  const out = await run(["npm", "pack", "--ignore-scripts", "--pack-destination", work.path, "--json"], dir);
  const [info] = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
  return { tarball: join(work.path, info!.filename), files: info!.files.map((f) => f.path).sort() };
}

beforeAll(async () => {
  await run([bun, "run", "build"], TTRPC_DIR);
  await run([bun, "run", "build"], SHIM_DIR);
  const shim = await npmPack(SHIM_DIR);
  shimFiles = shim.files;
  const ttrpc = await npmPack(TTRPC_DIR);
  const protobuf = await npmPack(PROTOBUF_DIR);
  registry = localRegistry([shim.tarball, ttrpc.tarball, protobuf.tarball]);

  mkdirSync(project);
  for (const f of readdirSync(USER_FILES)) copyFileSync(join(USER_FILES, f), join(project, f));
  await run([bun, "install", "--no-cache"], project, registry.env);

  // The user's commands, with \`bun\` on PATH as an installed Bun has it (the bin's #! asks for it).
  mkdirSync(join(work.path, "path"));
  symlinkSync(bun, join(work.path, "path/bun"));
  userEnv = { PATH: `${join(work.path, "path")}:${process.env.PATH}` };
  await run([bun, "run", "build"], project, userEnv);
  // libwasmtime is a runtime file: a user puts it (and its version file) in ../lib beside the binary.
  mkdirSync(join(project, "lib"));
  for (const f of ["libwasmtime.so", "libwasmtime.version"]) copyFileSync(join(LIB, f), join(project, "lib", f));
}, 300_000);

afterAll(() => {
  registry?.stop();
  work.cleanup();
});

describe("the package", () => {
  test("npm pack holds only the built .js and .d.ts, the README and the licence", () => {
    const other = shimFiles.filter((f) => !/^dist\/.+\.(js|d\.ts)$/.test(f) && !["package.json", "README.md", "LICENSE"].includes(f));
    expect(other).toEqual([]);
    expect(shimFiles).toContain("README.md");
    expect(shimFiles).toContain("LICENSE");
    const manifest = JSON.parse(readFileSync(join(SHIM_DIR, "package.json"), "utf8"));
    for (const target of Object.values(manifest.exports) as (string | { types: string; default: string })[]) {
      if (typeof target === "string") continue; // ./package.json
      expect(shimFiles).toContain(target.types.replace(/^\.\//, ""));
      expect(shimFiles).toContain(target.default.replace(/^\.\//, ""));
    }
    expect(shimFiles).toContain(manifest.bin["bunwasi-build"].replace(/^\.\//, ""));
    // Nothing of ttrpc is shipped twice: it is the dependency's.
    expect(shimFiles.filter((f) => f.startsWith("dist/ttrpc/"))).toEqual([]);
  });

  test("bun install resolved the shim, its @bunwasi/ttrpc dependency and the protobuf peer from the local registry only", () => {
    expect([...new Set(registry!.requested)].sort()).toEqual(["@bufbuild/protobuf", "@bunwasi/shim", "@bunwasi/ttrpc"]);
    for (const name of ["@bunwasi/shim", "@bunwasi/ttrpc", "@bufbuild/protobuf"]) {
      const dir = join(project, "node_modules", name);
      expect(lstatSync(dir).isSymbolicLink()).toBe(false);
      expect(realpathSync(dir).startsWith(realpathSync(project))).toBe(true);
    }
    expect(Bun.resolveSync("@bunwasi/shim", project)).toBe(join(installed, "dist/package/index.js"));
    expect(Bun.resolveSync("@bunwasi/shim/wasmtime", project)).toBe(join(installed, "dist/package/wasmtime.js"));
    expect(Bun.resolveSync("@bunwasi/shim/build", project)).toBe(join(installed, "dist/package/build.js"));
  });

  test("the README shows the test's whole user project, file by file", () => {
    const readme = readFileSync(join(installed, "README.md"), "utf8");
    const fence: Record<string, string> = { ts: "ts", wat: "wat", json: "json" };
    for (const f of readdirSync(USER_FILES)) {
      const text = readFileSync(join(USER_FILES, f), "utf8");
      expect(readme).toContain(`\`${f}\`:\n\n\`\`\`${fence[f.split(".").at(-1)!]}\n${text}\`\`\``);
    }
  });

  test(
    "the installed .d.ts hold the pinned types (test/package/shim-api.ts), and each entry exports exactly the pinned names",
    () => {
      // Beside the project, resolving through its node_modules: not a file of the project.
      const dir = join(work.path, "api");
      mkdirSync(dir);
      copyFileSync(join(import.meta.dir, "shim-api.ts"), join(dir, "shim-api.ts"));
      symlinkSync(join(project, "node_modules"), join(dir, "node_modules"));
      const program = ts.createProgram([join(dir, "shim-api.ts")], {
        target: ts.ScriptTarget.ESNext,
        module: ts.ModuleKind.ESNext,
        moduleResolution: ts.ModuleResolutionKind.Bundler,
        strict: true,
        noEmit: true,
        skipDefaultLibCheck: true, // TypeScript's own lib.*.d.ts; the package's .d.ts are checked
      });
      const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
      expect(diagnostics).toEqual([]);

      const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8"));
      const checker = program.getTypeChecker();
      for (const [spec, names] of Object.entries(SURFACE)) {
        const types = join(installed, manifest.exports[`.${spec.slice("@bunwasi/shim".length)}`].types);
        // The program found the entry through the installed package, not this repository.
        const source = program.getSourceFile(types);
        expect(`${types}: ${source !== undefined}`).toBe(`${types}: true`);
        const exported = checker.getExportsOfModule(checker.getSymbolAtLocation(source!)!).map((s) => s.name);
        expect({ spec, names: exported.sort() }).toEqual({ spec, names: [...names].sort() });
      }
      expect(program.getSourceFiles().filter((f) => f.fileName.startsWith(join(ROOT, "src")))).toEqual([]);
    },
    T,
  );
});

describe("the user project", () => {
  for (const resolution of ["bundler", "nodenext"]) {
    test(
      `tsc type-checks it against the installed .d.ts (moduleResolution ${resolution})`,
      async () => {
        const config = join(work.path, `tsconfig.${resolution}.json`);
        const module = resolution === "bundler" ? "ESNext" : "NodeNext";
        writeFileSync(
          config,
          JSON.stringify({
            extends: join(project, "tsconfig.json"),
            compilerOptions: { module, moduleResolution: resolution },
            files: [join(project, "shim.ts"), join(project, "host.ts")],
          }),
        );
        const files = await run([bun, TSC, "-p", config, "--listFiles"], project);
        expect(files).toContain(join(installed, "dist/package/index.d.ts"));
        expect(files).toContain(join(installed, "dist/package/wasmtime.d.ts"));
        expect(files).not.toContain(join(ROOT, "src"));
      },
      T,
    );
  }

  test(
    "bunwasi-build names the installed package's scripts, never this repository's",
    async () => {
      const out = await run(
        [join(project, "node_modules/.bin/bunwasi-build"), "--dry-run", "--outfile", "x", "shim.ts", "host.ts"],
        project,
        userEnv,
      );
      const argv = out.trim().split(" ");
      const files = argv.slice(argv.indexOf("--no-compile-autoload-bunfig") + 1, argv.indexOf("--outfile"));
      expect(files.slice(0, 2)).toEqual([join(project, "shim.ts"), join(project, "host.ts")]);
      expect(files.slice(2).map((f) => relative(installed, f))).toEqual([
        "dist/shim/command-line.js",
        "dist/shim/serve.js",
        "dist/engines/wasmtime/worker.js",
        "dist/engines/wasmtime/pool-worker.js",
        "dist/engines/wasmtime/compile-worker.js",
        "dist/engines/wasmtime/wasi-shadows.js",
      ]);
    },
    T,
  );

  test(
    "`bun run build` made the binary, which answers -v with its own name",
    async () => {
      const binary = join(project, "bin", BINARY);
      expect(existsSync(binary)).toBe(true);
      expect((await run([binary, "-v"], project)).split("\n")[0]).toBe(`${BINARY} (bunwasi 0.1.0)`);
    },
    T,
  );
});

test("prerequisites: root, runc, Debian's containerd, containerd 2.4.2 built by scripts/containerd-versions.sh", () => {
  expect(process.getuid?.()).toBe(0);
  expect(Bun.which("runc")).not.toBeNull();
  expect(existsSync("/usr/bin/containerd")).toBe(true);
  expect(`${V2}: ${existsSync(V2)}`).toBe(`${V2}: true`);
});

for (const [label, binary] of [
  ["1.6 (Debian's)", undefined],
  ["2.4.2", V2],
] as const) {
  describe(`containerd ${label} runs the user's ${BINARY}`, () => {
    let cd: Containerd | undefined;

    beforeAll(async () => {
      const dir = join(work.path, `cd-${binary ? "2" : "1"}`);
      cd = await startContainerd({
        dir,
        path: [join(project, "bin")],
        ...(binary ? { binary } : {}),
        env: {
          // What the binary finds is what a user installed: nothing of this checkout's.
          BUNWASI_LIBWASMTIME: "",
          BUNWASI_LIB_DIR: "",
          BUNWASI_KILL_LIB: "",
          BUNWASI_HTTP_HOST_LIB: "",
          // The node's directories (state, executor directories, compile cache) in containerd's
          // own, which stop() unmounts and removes: this test's binary leaves nothing behind.
          BUNWASI_STATE_ROOT: join(dir, "bunwasi-state"),
          BUNWASI_EXEC_ROOT: join(dir, "bunwasi-lib"),
        },
      });
      const archive = join(work.path, `shout-${label.split(" ")[0]}.tar`);
      writeImageArchive(archive, {
        name: IMAGE,
        files: [{ path: "/shout.wat", source: join(project, "shout.wat"), mode: 0o644 }],
        config: { entrypoint: ["/shout.wat"] },
      });
      const r = await cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import ${archive}: ${r.stderr}`);
    }, 120_000);

    afterAll(async () => {
      await cd?.stop();
    }, T);

    test(
      "the guest's text comes back upper-cased by the host function, and it exits with the host's count",
      async () => {
        const r = await cd!.ctr(["run", "--rm", "--runtime", RUNTIME, IMAGE, `shout-${process.pid}`, "/shout.wat"], { timeoutMs: T });
        expect(r.stderr).toBe("");
        expect(r.stdout).toBe("HELLO FROM THE GUEST\n");
        // h e l l o  f r o m  t h e  g u e s t: 17 letters changed.
        expect(r.code).toBe(17);
      },
      T,
    );
  });
}
