// scripts/install.sh puts on a node what it needs and nothing else. It runs here in a mount
// namespace where every filesystem is read-only but one temp directory (the prefix and the unit
// directory live in it), with package managers and build tools on PATH as tripwires: so it
// can have written nothing else and run none of them. Then: the files are exactly the expected
// ones; the containerd snippets give a real containerd 1.6, 1.7 and 2.4 our two runtimes and
// keep the node's own CRI settings; the installed binaries run from the prefix and find their
// libraries there (a real containerd runs wasm containers through them, in both modes); an
// upgrade leaves a running shim server on its own build; --uninstall takes it all away.
// Relies on the build products scripts/setup.sh makes (the test command runs it first).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  cpSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { SHARED_RUNTIME } from "../support/daemon.ts";
import { IMAGES, REPO, RUNTIME, type ShimEnv, shimEnv } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc") && !!Bun.which("unshare");
test("prerequisites: root, containerd, runc, unshare", () => expect(canRun).toBe(true));

const T = 120_000;
/** The one binary, and the names install.sh links to it (src/bin/programs.ts). */
const ONE = "bunwasi";
const PROGRAMS = ["containerd-shim-wasmtime-v1", "containerd-wasmtimed", "containerd-shim-wasmtimed-v1"];
/** Build product → its name in the installed lib/ directory. */
const LIBS = [
  "build/lib/libwasmtime.so",
  "build/lib/libwasmtime.version",
  "build/native/libbunwasi-kill.so",
  "build/native/libbunwasi-pool.so",
  "build/http-host/libbunwasi_http.so",
  "build/http-host/libbunwasi_http.version",
];
const SNIPPETS = ["containerd-1.x.toml", "containerd-2.x.toml"];
const UNIT = "containerd-wasmtimed.service";
/** What install.sh must never run: package managers (querying included), build tools, containerd, runc, systemd. */
const TRIPWIRES = [
  ...["apt-get", "apt", "aptitude", "dpkg", "dpkg-query", "npm", "npx", "pip", "pip3", "cargo", "rustc", "clang", "gcc", "cc", "bun", "go"],
  ...["containerd", "ctr", "runc", "systemctl"],
];
/** Files of the system a node install must leave exactly as they are. */
const SYSTEM_FILES = ["/var/lib/dpkg/status", "/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc", "/usr/bin/containerd-shim-runc-v2"];
const CONTAINERD = {
  "1.6": "/usr/bin/containerd",
  "1.7": join(REPO, "build/containerd/v1.7.35/bin/containerd"),
  "2.4": join(REPO, "build/containerd/v2.4.2/bin/containerd"),
};
const VERSION = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")).version as string;

let seq = 0;
const uid = (what: string) => `ins-${what}-${process.pid}-${seq++}`;

function sha256(path: string): string {
  return new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");
}

/** Content, inode and mtime of each file (or "absent"): equal before and after means untouched. */
function fingerprint(paths: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of paths) {
    if (!existsSync(p)) out[p] = "absent";
    else {
      const st = statSync(p);
      out[p] = `${sha256(p)} ino=${st.ino} mtime=${st.mtimeMs} mode=${st.mode.toString(8)}`;
    }
  }
  return out;
}

/** Everything under `dir` as "<type> <relative path> <mode> [-> link]" lines, sorted. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(dir, r));
      const mode = (st.mode & 0o7777).toString(8).padStart(4, "0");
      if (st.isSymbolicLink()) out.push(`l ${r} -> ${readlinkSync(join(dir, r))}`);
      else if (st.isDirectory()) {
        out.push(`d ${r} ${mode}`);
        walk(r);
      } else out.push(`f ${r} ${mode}`);
    }
  };
  walk("");
  return out.sort();
}

/** Runs argv with every filesystem read-only but one directory (see the script). */
const READ_ONLY = join(REPO, "test/support/read-only-ns.sh");

describe("scripts/install.sh: a node install that touches nothing else", () => {
  let dir: string; // everything of this test
  let w: string; // the only place install.sh may write
  let prefix: string;
  let units: string;
  let store: string;
  let trip: string;
  let env: ShimEnv | undefined;
  let ns: string | undefined;
  let daemon: Bun.Subprocess | undefined;
  const baseline: Record<string, string> = {};

  beforeAll(() => {
    // The libraries must come from the prefix, not from the environment.
    for (const k of ["BUNWASI_LIBWASMTIME", "BUNWASI_LIB_DIR", "BUNWASI_KILL_LIB", "BUNWASI_HTTP_HOST_LIB", "BUNWASI_EXECUTOR"])
      delete process.env[k];
    const built = Bun.spawnSync(["bash", join(REPO, "scripts/build-shim.sh"), join(REPO, "build/bin"), ...PROGRAMS], { stderr: "pipe" });
    if (built.exitCode !== 0) throw new Error(`build-shim.sh: ${built.stderr}`);
    for (const f of LIBS) if (!existsSync(join(REPO, f))) throw new Error(`${f} is missing: run bash scripts/setup.sh`);
    dir = mkdtempSync("/tmp/bwi-");
    w = join(dir, "w");
    prefix = join(w, "usr/local");
    units = join(w, "units");
    store = join(prefix, "lib/bunwasi");
    trip = join(dir, "trip");
    mkdirSync(w);
    mkdirSync(trip);
    for (const t of TRIPWIRES) {
      writeFileSync(join(trip, t), `#!/bin/sh\necho "${t} $*" >> ${w}/tripwire.log\nexit 97\n`);
      chmodSync(join(trip, t), 0o755);
    }
    Object.assign(baseline, fingerprint(SYSTEM_FILES));
  }, T);

  afterAll(async () => {
    if (daemon && daemon.exitCode === null) daemon.kill("SIGKILL");
    await daemon?.exited;
    await env?.stop();
    if (ns) for (const d of [runtimeRoot(ns), containerStateDir(ns)]) rmSync(d, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, T);

  /** install.sh from `repo` (default this checkout), sandboxed: its exit code and output. */
  function install(args: string[] = [], repo = REPO): { code: number; out: string } {
    const r = Bun.spawnSync(
      [
        "unshare",
        "--mount",
        "bash",
        READ_ONLY,
        w,
        "env",
        `PATH=${trip}:${process.env.PATH}`,
        `PREFIX=${prefix}`,
        `SYSTEMD_UNIT_DIR=${units}`,
        "bash",
        join(repo, "scripts/install.sh"),
        ...args,
      ],
      { stdout: "pipe", stderr: "pipe" },
    );
    return { code: r.exitCode ?? -1, out: `${r.stdout}${r.stderr}` };
  }

  /** The build directories in the store. */
  const builds = () => (existsSync(store) ? readdirSync(store).sort() : []);

  /** What one build directory must hold, as tree() lists it from w. */
  const buildTree = (b: string) => [
    `d usr/local/lib/bunwasi/${b} 0755`,
    `d usr/local/lib/bunwasi/${b}/bin 0755`,
    `d usr/local/lib/bunwasi/${b}/lib 0755`,
    `f usr/local/lib/bunwasi/${b}/bin/${ONE} 0755`,
    ...LIBS.map((f) => `f usr/local/lib/bunwasi/${b}/lib/${basename(f)} ${f.endsWith(".so") ? "0755" : "0644"}`),
  ];
  const linksTo = (b: string) => PROGRAMS.map((n) => `l usr/local/bin/${n} -> ../lib/bunwasi/${b}/bin/${ONE}`);
  const fixed = [
    "d units 0755",
    `f units/${UNIT} 0644`,
    "d usr 0755",
    "d usr/local 0755",
    "d usr/local/bin 0755",
    "d usr/local/lib 0755",
    "d usr/local/lib/bunwasi 0755",
    "d usr/local/share 0755",
    "d usr/local/share/bunwasi 0755",
    ...SNIPPETS.map((s) => `f usr/local/share/bunwasi/${s} 0644`),
  ];

  /** The shim server of container `id` (its command line names it) and the binary it runs. */
  function serverOf(id: string): { pid: number; exe: string } | undefined {
    for (const name of readdirSync("/proc")) {
      if (!/^\d+$/.test(name)) continue;
      try {
        const cmd = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0");
        if (!cmd.some((a) => a.endsWith("containerd-shim-wasmtime-v1")) || cmd[cmd.indexOf("-id") + 1] !== id) continue;
        return { pid: Number(name), exe: readlinkSync(`/proc/${name}/exe`) };
      } catch {}
    }
    return undefined;
  }

  async function running(id: string): Promise<boolean> {
    const ls = await env?.cd.ctr(["tasks", "ls"]);
    return !!ls?.stdout.split("\n").some((l) => l.startsWith(`${id} `) && l.includes("RUNNING"));
  }

  test(
    "installs exactly the binaries, libraries, unit and snippets into the prefix; writes and runs nothing else",
    () => {
      const r = install();
      if (r.code !== 0) throw new Error(`install.sh exited ${r.code}:\n${r.out}`);
      const [b, ...more] = builds();
      expect(more).toEqual([]);
      expect(b).toMatch(new RegExp(`^${VERSION.replaceAll(".", "\\.")}-[0-9a-f]{12}$`));
      // Everything it wrote (no tripwire.log: it ran no package manager or build tool).
      expect(tree(w)).toEqual([...fixed, ...buildTree(b as string), ...linksTo(b as string)].sort());
      // The files are the build's.
      expect(sha256(join(store, b as string, "bin", ONE))).toBe(sha256(join(REPO, "build/bin", ONE)));
      for (const f of LIBS) expect(sha256(join(store, b as string, "lib", basename(f)))).toBe(sha256(join(REPO, f)));
      expect(readFileSync(join(units, UNIT), "utf8")).toContain(
        `\nExecStart=${prefix}/bin/containerd-wasmtimed --socket /run/bunwasi/wasmtimed.sock --pid-file /run/bunwasi/wasmtimed.pid\n`,
      );
      expect(readFileSync(join(units, UNIT), "utf8")).toContain(
        `\nExecReload=${prefix}/bin/containerd-wasmtimed --socket /run/bunwasi/wasmtimed.sock --pid-file /run/bunwasi/wasmtimed.pid --take-over --detach\n`,
      );
      expect(r.out).toContain(`imports = ["${prefix}/share/bunwasi/containerd-2.x.toml"]`);
      expect(r.out).toContain(`append ${prefix}/share/bunwasi/containerd-1.x.toml to /etc/containerd/config.toml`);
      // The system's packages and binaries, untouched.
      expect(fingerprint(SYSTEM_FILES)).toEqual(baseline);

      // A second run of the same build changes nothing.
      const before = tree(w);
      const again = install();
      expect(again.code).toBe(0);
      expect(tree(w)).toEqual(before);
    },
    T,
  );

  test("each installed name runs its own program from the prefix: its version, and its usage for -h and --help", () => {
    for (const [bin, flag] of [
      ["containerd-shim-wasmtime-v1", "-v"],
      ["containerd-wasmtimed", "--version"],
      ["containerd-shim-wasmtimed-v1", "-v"],
    ] as const) {
      const r = Bun.spawnSync([join(prefix, "bin", bin), flag], { stdout: "pipe", stderr: "pipe", cwd: "/" });
      expect(`${r.stdout}${r.stderr}`).toBe(`${bin} (bunwasi ${VERSION})\n`);
      expect(r.exitCode).toBe(0);
      for (const help of ["-h", "--help"]) {
        const h = Bun.spawnSync([join(prefix, "bin", bin), help], { stdout: "pipe", stderr: "pipe", cwd: "/" });
        expect(h.stderr.toString()).toBe("");
        expect(h.stdout.toString()).toStartWith(`usage: ${bin} `);
        expect(h.exitCode).toBe(0);
      }
    }
    // The binary itself, under its own name: the list of its programs.
    const own = Bun.spawnSync([join(prefix, "lib/bunwasi", builds()[0] as string, "bin", ONE), "--help"], {
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(own.exitCode).toBe(0);
    for (const p of PROGRAMS) expect(own.stdout.toString()).toContain(`\n  ${p} `);
  });

  test.each(Object.entries(CONTAINERD))(
    "containerd %s with the snippet as the output says: both runtimes at the prefix, the node's own CRI settings kept",
    (version, binary) => {
      expect(existsSync(binary)).toBe(true);
      const v2 = version.startsWith("2.");
      const cri = v2 ? "'io.containerd.cri.v1.runtime'" : '"io.containerd.grpc.v1.cri"';
      // A node's config with CRI settings of its own: runc with the systemd cgroup driver.
      const own = `[plugins.${cri.replaceAll("'", '"')}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins.${cri.replaceAll("'", '"')}.containerd.runtimes.runc.options]
    SystemdCgroup = true
`;
      const snippet = join(prefix, "share/bunwasi", v2 ? "containerd-2.x.toml" : "containerd-1.x.toml");
      const config = v2
        ? `version = 3\nimports = [${JSON.stringify(snippet)}]\n${own}`
        : `version = 2\n${own}\n${readFileSync(snippet, "utf8")}`;
      const path = join(dir, `config-${version}.toml`);
      writeFileSync(path, config);
      const r = Bun.spawnSync([binary, "--config", path, "config", "dump"], { stdout: "pipe", stderr: "pipe" });
      expect(r.exitCode).toBe(0);
      // The dump's lines of one runtime table (its header to the next blank line).
      const q = (s: string) => (v2 ? `'${s}'` : `"${s}"`);
      const table = (name: string) => {
        const lines = r.stdout.toString().split("\n");
        const at = lines.findIndex((l) => l.trim() === `[plugins.${cri}.containerd.runtimes.${name}]`);
        expect(at).toBeGreaterThan(-1);
        const end = lines.findIndex((l, i) => i > at && l.trim() === "");
        return lines.slice(at + 1, end).map((l) => l.trim());
      };
      expect(table("wasmtime")).toContain(`runtime_type = ${q("io.containerd.wasmtime.v1")}`);
      expect(table("wasmtime")).toContain(`runtime_path = ${q(`${prefix}/bin/containerd-shim-wasmtime-v1`)}`);
      expect(table("wasmtimed")).toContain(`runtime_type = ${q("io.containerd.wasmtimed.v1")}`);
      expect(table("wasmtimed")).toContain(`runtime_path = ${q(`${prefix}/bin/containerd-shim-wasmtimed-v1`)}`);
      expect(table("runc.options")).toContain("SystemdCgroup = true");
    },
  );

  test(
    "a real containerd runs wasm containers through the installed shim, which uses the installed libraries; an upgrade leaves its running server alone",
    async () => {
      const a = builds()[0] as string;
      const exec = join(dir, "exec");
      // Our shims from the prefix only (not the checkout's build/bin).
      env = await shimEnv({
        ourShims: false,
        path: [join(prefix, "bin")],
        env: { BUNWASI_EXEC_ROOT: exec, BUNWASI_DAEMON_SOCKET: join(dir, "d/wasmtimed.sock") },
        dir: join(dir, basename(dir)),
      });
      const cd = env.cd;
      ns = cd.namespace;
      const old = uid("old");
      expect((await cd.ctr(["run", "-d", "--runtime", RUNTIME, IMAGES.demo, old, "/wasi-demo-app.wasm", "sleep", "600000"])).code).toBe(0);
      await until(`${old} to run`, () => running(old));
      const server = await until(`the server of ${old}`, () => serverOf(old));
      // The one binary of build A, started (by start) under the shim's name.
      expect(server.exe).toBe(join(store, a, "bin", ONE));
      // The executor directory holds the installed libwasmtime itself (a hard link: same inode).
      const [execDir, ...others] = readdirSync(join(exec, "exec")).filter((n) => !n.startsWith("."));
      expect(others).toEqual([]);
      expect(statSync(join(exec, "exec", execDir as string, "libwasmtime.so")).ino).toBe(
        statSync(join(store, a, "lib/libwasmtime.so")).ino,
      );

      // Build B: the same files but one (the http library's identity), from a copy of the checkout.
      const other = join(dir, "repo-b");
      for (const f of ["package.json", "scripts/install.sh", "scripts/containerd-config", "scripts/systemd"]) {
        cpSync(join(REPO, f), join(other, f), { recursive: true });
      }
      for (const f of [...LIBS, `build/bin/${ONE}`]) {
        mkdirSync(dirname(join(other, f)), { recursive: true });
        linkSync(realpathSync(join(REPO, f)), join(other, f));
      }
      mkdirSync(join(other, "src"));
      rmSync(join(other, "build/http-host/libbunwasi_http.version"));
      writeFileSync(
        join(other, "build/http-host/libbunwasi_http.version"),
        `${readFileSync(join(REPO, "build/http-host/libbunwasi_http.version"), "utf8").trim()}+b\n`,
      );
      const up = install([], other);
      if (up.code !== 0) throw new Error(`install.sh of build B exited ${up.code}:\n${up.out}`);
      const b = builds().find((x) => x !== a) as string;
      expect(builds()).toEqual([a, b].sort());
      expect(up.out).toContain(`older builds kept for the servers still running them: ${a} `);
      expect(tree(w)).toEqual([...fixed, ...buildTree(a), ...buildTree(b), ...linksTo(b)].sort());
      expect(realpathSync(join(prefix, "bin/containerd-shim-wasmtime-v1"))).toBe(join(store, b, "bin", ONE));

      // A new pod gets build B; the old one goes on on A, and ends as it should.
      const fresh = uid("new");
      expect((await cd.ctr(["run", "-d", "--runtime", RUNTIME, IMAGES.demo, fresh, "/wasi-demo-app.wasm", "sleep", "600000"])).code).toBe(
        0,
      );
      await until(`${fresh} to run`, () => running(fresh));
      expect((await until(`the server of ${fresh}`, () => serverOf(fresh))).exe).toBe(join(store, b, "bin", ONE));
      expect(await running(old)).toBe(true);
      expect(serverOf(old)?.pid).toBe(server.pid);
      const r = await env.run(IMAGES.demo, uid("echo"), ["/wasi-demo-app.wasm", "echo", "from the prefix"]);
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("from the prefix\nexiting\n");
      expect(r.code).toBe(0);
      for (const id of [old, fresh]) {
        expect((await cd.ctr(["tasks", "kill", "-s", "SIGKILL", id])).code).toBe(0);
        await until(`${id} to stop`, async () => !(await running(id)));
        expect((await cd.ctr(["tasks", "rm", id])).code).toBe(0);
        expect((await cd.ctr(["containers", "rm", id])).code).toBe(0);
      }
      await until("both servers to exit", () => !serverOf(old) && !serverOf(fresh));
    },
    T,
  );

  test(
    "shared mode from the prefix: the installed daemon loads the installed libwasmtime and runs a wasm container",
    async () => {
      if (!env) throw new Error("needs the containerd of the previous test");
      const [b] = builds().filter((x) => realpathSync(join(prefix, "bin/containerd-wasmtimed")).startsWith(join(store, x)));
      const socket = join(dir, "d/wasmtimed.sock");
      daemon = Bun.spawn([join(prefix, "bin/containerd-wasmtimed"), "--socket", socket], {
        env: { ...(process.env as Record<string, string>), BUNWASI_EXEC_ROOT: join(dir, "exec") },
        stdin: "ignore",
        stdout: "ignore",
        stderr: Bun.file(join(dir, "daemon.log")),
      });
      await until("the daemon to listen", () => {
        if (daemon?.exitCode !== null) throw new Error(`the daemon exited: ${readFileSync(join(dir, "daemon.log"), "utf8")}`);
        return existsSync(socket);
      });
      const r = await env.run(IMAGES.demo, uid("shared"), ["/wasi-demo-app.wasm", "echo", "shared from the prefix"], {
        runtime: SHARED_RUNTIME,
      });
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("shared from the prefix\nexiting\n");
      expect(r.code).toBe(0);
      // The daemon ran the module with the library of its own build, mapped from the prefix.
      const maps = readFileSync(`/proc/${daemon.pid}/maps`, "utf8");
      expect(maps).toContain(join(store, b as string, "lib/libwasmtime.so"));
      daemon.kill("SIGTERM");
      expect(await daemon.exited).toBe(0);
    },
    T,
  );

  test(
    "--uninstall removes every file it installed (all builds), and nothing else",
    async () => {
      await env?.stop();
      env = undefined;
      const r = install(["--uninstall"]);
      if (r.code !== 0) throw new Error(`install.sh --uninstall exited ${r.code}:\n${r.out}`);
      // Only the directories it found or made are left, empty.
      expect(tree(w)).toEqual([
        "d units 0755",
        "d usr 0755",
        "d usr/local 0755",
        "d usr/local/bin 0755",
        "d usr/local/lib 0755",
        "d usr/local/share 0755",
      ]);
      expect(fingerprint(SYSTEM_FILES)).toEqual(baseline);
    },
    T,
  );
});
