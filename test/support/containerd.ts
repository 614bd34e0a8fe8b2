// A private containerd for e2e tests: its own root, state, sockets, config and log, all under a
// directory the caller gives. It never talks to (or stops) the system's containerd.
//
//   const cd = await startContainerd({ dir, path: ["/work/main/dist"] });
//   await cd.ctr(["images", "import", "img.tar"]);     // → { code, stdout, stderr }
//   const p = cd.ctrSpawn(["run", "--rm", img, "id"]);  // long-running, Bun.Subprocess
//   (await cd.taskList()).get(id);                      // `ctr tasks ls` → [pid, status]
//   const w = cd.watchExits(); w.exits.get(id); w.stop(); // `ctr events`' /tasks/exit
//   await cd.restart();                                 // SIGTERM containerd only; shims live on
//   await cd.stop();                                    // kill all, clean up, remove dir
//
// Things that stay outside `dir` (fixed by containerd 1.6 and its runc shim, not configurable):
// shim sockets in /run/containerd/s/<sha256(address,ns,id)> (unique because our address is),
// and runc's state in /run/containerd/runc/<namespace>; the namespace is unique per instance
// (derived from dir) so those never collide with the system's, and stop() removes them.
// ctr's IO fifos go under dir (we add --fifo-dir to `run`, `tasks start`, `tasks exec`).

import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join, resolve } from "node:path";

export interface ContainerdOptions {
  /** Everything lives here (created if missing); stop() removes it. Keep it short: sockets. */
  dir: string;
  /** Extra PATH entries, put before the inherited PATH (where containerd finds shim binaries). */
  path?: string[];
  /** containerd binary; default /usr/bin/containerd. */
  binary?: string;
  /** ctr binary; default the `ctr` beside `binary` if there is one, else /usr/bin/ctr. */
  ctrBinary?: string;
  /** Namespace used by ctr()/ctrSpawn(); default derived from dir, so unique per instance. */
  namespace?: string;
  /** Snapshotter for ctr (CONTAINERD_SNAPSHOTTER); default overlayfs. */
  snapshotter?: "overlayfs" | "native";
  /** containerd log level; default "debug". */
  logLevel?: "trace" | "debug" | "info" | "warn" | "error";
  /** Extra environment for containerd (and so for the shims it starts). */
  env?: Record<string, string>;
  /** How long to wait for containerd to answer; default 20 s. */
  startTimeoutMs?: number;
  /** Plugins to keep loaded that the config disables by default (test/support/cri.ts: the CRI ones). */
  enablePlugins?: string[];
  /** TOML appended to the config: whole tables under [plugins], e.g. the CRI plugin's settings. */
  pluginConfig?: string;
}

export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CtrOptions {
  /** Data for ctr's stdin (closed after writing). Default: no stdin. */
  stdin?: string | Uint8Array;
  /** Kill ctr after this long (SIGKILL); the result then has code 137. Default 60 s. */
  timeoutMs?: number;
  /** Override the namespace for this call. */
  namespace?: string;
  env?: Record<string, string>;
}

export interface ExitWatch {
  readonly exits: Map<string, number>;
  readonly seenAt: Map<string, number>;
  /** The `ctr events` process (a process of this containerd's, not a shim). */
  readonly pid: number;
  stop(): void;
}

export interface Containerd {
  readonly dir: string;
  /** gRPC address (unix socket path) — what `ctr --address` and shims' -address get. */
  readonly address: string;
  readonly ttrpcAddress: string;
  readonly namespace: string;
  readonly root: string;
  readonly state: string;
  readonly configPath: string;
  readonly logPath: string;
  readonly binary: string;
  readonly ctrBinary: string;
  /** pid of the running containerd (0 when stopped). */
  readonly pid: number;
  /** How long the last start took, until `ctr version` answered (ms). */
  readonly startMs: number;
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  ctrSpawn(
    args: string[],
    opts?: Omit<CtrOptions, "timeoutMs" | "stdin"> & { stdin?: "pipe" | "ignore" },
  ): Bun.Subprocess<"pipe" | "ignore", "pipe", "pipe">;
  /** The full argv ctr() would run (for logging or for running it yourself). */
  ctrArgv(args: string[], namespace?: string): string[];
  /** `ctr tasks ls`: id → [pid, status]. `timeoutMs`: ctr's (default 60 s; thousands of tasks take longer under load). */
  taskList(timeoutMs?: number): Promise<Map<string, [number, string]>>;
  /**
   * containerd's task exit events as they come (`ctr events`, /tasks/exit): what containerd has
   * seen, not what a shim says. `exits`: container id → exit status; `seenAt`: when each was read
   * (performance.now()). stop() ends the watch.
   */
  watchExits(): ExitWatch;
  /** SIGTERM containerd only (shims keep running), then start it again with the same config. */
  restart(): Promise<void>;
  /** Kill everything this instance started, clean up, remove dir. Safe to call twice. */
  stop(): Promise<void>;
  logTail(lines?: number): string;
}

const DISABLED_PLUGINS = [
  // CRI (1.6/1.7 single plugin; 2.x split) — slow to start and not needed for ctr
  "io.containerd.grpc.v1.cri",
  "io.containerd.cri.v1.images",
  "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox",
  // snapshotters we do not use
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.blockfile",
  // tracing, NRI (2.x enables NRI with a socket under /var/run/nri). Not the legacy
  // io.containerd.runtime.v1.linux: 1.6's tasks service will not load without it.
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.nri.v1.nri",
];

const UNIX_PATH_MAX = 107; // sun_path is 108 bytes including the NUL

/**
 * The config for a private instance. Version 2 is what 1.6 and 1.7 read; 2.x reads it too but
 * migrates it, so 2.x gets version 3, its own format up to 2.2 (2.3+ read 4, which moves
 * [grpc]/[ttrpc]/[debug] into io.containerd.server.v1.* plugins, and migrate 3 to it with a
 * warning in the log). Nothing we set differs between 2 and 3: the keys below and the plugin
 * ids in DISABLED_PLUGINS are the same.
 */
export function containerdConfig(o: {
  root: string;
  state: string;
  address: string;
  optDir: string;
  logLevel: string;
  configVersion?: 2 | 3;
  enablePlugins?: string[];
  pluginConfig?: string;
}): string {
  const q = (s: string) => JSON.stringify(s); // TOML basic strings accept JSON string escapes
  const disabled = DISABLED_PLUGINS.filter((p) => !o.enablePlugins?.includes(p));
  return `version = ${o.configVersion ?? 2}
root = ${q(o.root)}
state = ${q(o.state)}
disabled_plugins = [${disabled.map(q).join(", ")}]

[grpc]
  address = ${q(o.address)}

[ttrpc]
  address = ${q(`${o.address}.ttrpc`)}

[debug]
  address = ""
  level = ${q(o.logLevel)}

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = ${q(o.optDir)}
${o.pluginConfig ?? ""}`;
}

/** containerd's major version, from `containerd --version` ("containerd <pkg> v2.4.2 <rev>"). */
export function containerdMajor(binary: string): number {
  const r = Bun.spawnSync([binary, "--version"], { stdout: "pipe", stderr: "pipe" });
  const m = /\sv?(\d+)\.\d+\.\d+/.exec(r.stdout.toString());
  if (r.exitCode !== 0 || !m) throw new Error(`${binary} --version: cannot tell its version (${r.stdout}${r.stderr})`);
  return Number(m[1]);
}

function namespaceFor(dir: string): string {
  const base = basename(dir)
    .replace(/[^A-Za-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
  return `bw-${base || "test"}`.slice(0, 60).replace(/-+$/, "");
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Mount points at or under dir (from /proc/self/mountinfo), deepest first. */
export function mountsUnder(dir: string): string[] {
  const d = resolve(dir);
  const out: string[] = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const field = line.split(" ")[4];
    if (!field) continue;
    const mp = field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    if (mp === d || mp.startsWith(`${d}/`)) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Processes (other than us) whose command line mentions dir, or whose cwd or exe is under it. */
export function processesUsing(dir: string): { pid: number; cmdline: string }[] {
  const d = resolve(dir);
  const under = (p: string) => p === d || p.startsWith(`${d}/`);
  const out: { pid: number; cmdline: string }[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim();
      let hit = cmdline.includes(d);
      if (!hit) {
        for (const link of ["cwd", "exe"]) {
          try {
            if (under(readlinkSync(`/proc/${pid}/${link}`))) hit = true;
          } catch {}
        }
      }
      if (hit) out.push({ pid, cmdline });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * The socket a runtime v2 shim listens on, from its command line (`-namespace NS -address A
 * -id ID`): /run/containerd/s/<sha256(A/NS/ID)>, as containerd 1.6's shim library computes it.
 */
export function shimSocketOf(cmdline: string): string | undefined {
  const arg = (name: string) => cmdline.match(new RegExp(`(?:^|\\s)-${name}\\s+(\\S+)`))?.[1];
  const [ns, address, id] = [arg("namespace"), arg("address"), arg("id")];
  if (!ns || !address || !id || !/containerd-shim/.test(cmdline)) return undefined;
  return `/run/containerd/s/${new Bun.CryptoHasher("sha256").update(join(address, ns, id)).digest("hex")}`;
}

/** Cgroup directories ctr's default cgroup path (/<namespace>/<id>) made, v1 and v2 layouts. */
function namespaceCgroups(ns: string): string[] {
  const root = "/sys/fs/cgroup";
  const out: string[] = [];
  if (existsSync(join(root, ns))) out.push(join(root, ns));
  try {
    for (const ctl of readdirSync(root)) {
      const p = join(root, ctl, ns);
      if (existsSync(p)) out.push(p);
    }
  } catch {}
  return out;
}

function killCgroupTree(dir: string): void {
  let subdirs: string[] = [];
  try {
    subdirs = readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(dir, e.name));
  } catch {
    return;
  }
  for (const s of subdirs) killCgroupTree(s);
  try {
    for (const pid of readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {}
    }
  } catch {}
}

/** Whether no process is left anywhere in the cgroup tree at `dir` (a missing tree is empty). */
function cgroupTreeEmpty(dir: string): boolean {
  try {
    if (readFileSync(join(dir, "cgroup.procs"), "utf8").trim() !== "") return false;
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory() && !cgroupTreeEmpty(join(dir, e.name))) return false;
  } catch {
    // gone, or not a cgroup directory
  }
  return true;
}

function removeCgroupTree(dir: string): void {
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroupTree(join(dir, e.name));
    rmdirSync(dir);
  } catch {}
}

async function collect(proc: Bun.Subprocess<any, "pipe", "pipe">, timeoutMs: number): Promise<CtrResult> {
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  try {
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Writes `input` to a process's stdin (a ctrSpawn with stdin "pipe"), closes it (EOF), and
 * collects what the process prints and its exit code.
 */
export async function feed(p: Bun.Subprocess<"pipe" | "ignore", "pipe", "pipe">, input: string): Promise<CtrResult> {
  const sink = p.stdin as import("bun").FileSink;
  sink.write(input);
  await sink.end();
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

const FIFO_COMMANDS = (args: string[]) =>
  args[0] === "run" || (["tasks", "task", "t"].includes(args[0] ?? "") && ["start", "exec"].includes(args[1] ?? ""));

export async function startContainerd(opts: ContainerdOptions): Promise<Containerd> {
  const dir = resolve(opts.dir);
  const binary = opts.binary ?? "/usr/bin/containerd";
  const besideCtr = join(dirname(binary), "ctr");
  const ctrBinary = opts.ctrBinary ?? (existsSync(besideCtr) ? besideCtr : "/usr/bin/ctr");
  const namespace = opts.namespace ?? namespaceFor(dir);
  const address = join(dir, "c.sock");
  if (`${address}.ttrpc`.length > UNIX_PATH_MAX) {
    throw new Error(`containerd socket path too long (${address.length + 6} > ${UNIX_PATH_MAX}): use a shorter dir than ${dir}`);
  }
  const root = join(dir, "root");
  const state = join(dir, "state");
  const fifoDir = join(dir, "fifo");
  const configPath = join(dir, "config.toml");
  const logPath = join(dir, "containerd.log");
  for (const d of [dir, root, state, fifoDir]) mkdirSync(d, { recursive: true, mode: 0o711 });
  const major = containerdMajor(binary);
  writeFileSync(
    configPath,
    containerdConfig({
      root,
      state,
      address,
      optDir: join(dir, "opt"),
      logLevel: opts.logLevel ?? "debug",
      configVersion: major >= 2 ? 3 : 2,
      enablePlugins: opts.enablePlugins,
      pluginConfig: opts.pluginConfig,
    }),
  );
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    PATH: [...(opts.path ?? []), process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"].join(":"),
    ...(opts.env ?? {}),
  };
  const ctrEnv: Record<string, string> = {
    ...(process.env as Record<string, string>),
    CONTAINERD_SNAPSHOTTER: opts.snapshotter ?? "overlayfs",
    // ctr 2.x asks the daemon for deprecations on every call and logs each on stderr (on a
    // cgroup v1 host, always one); that would land in every command's stderr.
    CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS: "1",
  };
  delete ctrEnv.CONTAINERD_NAMESPACE;
  delete ctrEnv.CONTAINERD_ADDRESS;

  let proc: Bun.Subprocess | undefined;
  let startMs = 0;
  let stopped = false;

  const logTail = (lines = 40) => {
    try {
      return readFileSync(logPath, "utf8")
        .split("\n")
        .slice(-lines - 1)
        .join("\n");
    } catch {
      return "(no log)";
    }
  };

  const ctrArgv = (args: string[], ns = namespace) => {
    const sub = [...args];
    if (FIFO_COMMANDS(sub) && !sub.some((a) => a === "--fifo-dir" || a.startsWith("--fifo-dir="))) {
      const at = sub[0] === "run" ? 1 : 2;
      sub.splice(at, 0, "--fifo-dir", fifoDir);
    }
    return [ctrBinary, "--address", address, "--namespace", ns, ...sub];
  };

  const ctr = async (args: string[], o: CtrOptions = {}): Promise<CtrResult> => {
    const p = Bun.spawn(ctrArgv(args, o.namespace), {
      stdin: o.stdin === undefined ? "ignore" : "pipe",
      stdout: "pipe",
      stderr: "pipe",
      env: { ...ctrEnv, ...(o.env ?? {}) },
    });
    if (o.stdin !== undefined && p.stdin) {
      p.stdin.write(o.stdin);
      await p.stdin.end();
    }
    return collect(p, o.timeoutMs ?? 60_000);
  };

  const ctrSpawn: Containerd["ctrSpawn"] = (args, o = {}) =>
    Bun.spawn(ctrArgv(args, o.namespace), {
      stdin: o.stdin ?? "ignore",
      stdout: "pipe",
      stderr: "pipe",
      env: { ...ctrEnv, ...(o.env ?? {}) },
    }) as Bun.Subprocess<"pipe" | "ignore", "pipe", "pipe">;

  const taskList = async (timeoutMs?: number) => {
    const out = new Map<string, [number, string]>();
    for (const l of (await ctr(["tasks", "ls"], timeoutMs ? { timeoutMs } : {})).stdout.split("\n").slice(1)) {
      const [id, pid, status] = l.trim().split(/\s+/);
      if (id && pid && status) out.set(id, [Number(pid), status]);
    }
    return out;
  };

  const watchExits = (): ExitWatch => {
    const exits = new Map<string, number>();
    const seenAt = new Map<string, number>();
    const p = ctrSpawn(["events"]);
    void (async () => {
      let buf = "";
      const text = new TextDecoder();
      for await (const chunk of p.stdout as ReadableStream<Uint8Array>) {
        buf += text.decode(chunk, { stream: true });
        for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line.includes("/tasks/exit")) continue;
          const e = JSON.parse(line.slice(line.indexOf("{"))) as { container_id: string; exit_status?: number };
          exits.set(e.container_id, e.exit_status ?? 0);
          seenAt.set(e.container_id, performance.now());
        }
      }
    })();
    return { exits, seenAt, pid: p.pid, stop: () => p.kill("SIGKILL") };
  };

  // A config that makes containerd skip its tasks service still answers `ctr version`.
  const checkTasksPlugin = async () => {
    const r = await ctr(["plugins", "ls"], { timeoutMs: 5_000 });
    const line = r.stdout.split("\n").find((l) => /^io\.containerd\.grpc\.v1\s+tasks\s/.test(l));
    if (r.code !== 0 || !line || !/\sok\s*$/.test(line)) {
      throw new Error(`containerd's tasks service did not load: ${line ?? r.stderr.trim()}\n--- ${logPath} ---\n${logTail()}`);
    }
  };

  // On failure containerd is killed; dir (with the log) is left for the caller to inspect.
  const launch = async () => {
    try {
      await launchOnce();
    } catch (e) {
      if (proc && proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGKILL");
        await proc.exited;
      }
      throw e;
    }
  };

  const launchOnce = async () => {
    const t0 = performance.now();
    const logFd = openSync(logPath, "a");
    try {
      proc = Bun.spawn([binary, "--config", configPath], {
        stdin: "ignore",
        stdout: logFd,
        stderr: logFd,
        env,
        cwd: dir,
      });
    } finally {
      closeSync(logFd);
    }
    const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000);
    let last: CtrResult | undefined;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(
          `containerd exited during start (code ${proc.exitCode}, signal ${proc.signalCode})\n--- ${logPath} ---\n${logTail()}`,
        );
      }
      if (existsSync(address)) {
        last = await ctr(["version"], { timeoutMs: 5_000 });
        if (last.code === 0) {
          startMs = performance.now() - t0;
          await checkTasksPlugin();
          return;
        }
      }
      await sleep(20);
    }
    throw new Error(
      `containerd did not answer within ${opts.startTimeoutMs ?? 20_000} ms${last ? `: ${last.stderr.trim()}` : ""}\n--- ${logPath} ---\n${logTail()}`,
    );
  };

  const terminate = async () => {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill("SIGTERM");
    const done = await Promise.race([p.exited.then(() => true), sleep(10_000).then(() => false)]);
    if (!done) {
      p.kill("SIGKILL");
      await p.exited;
    }
  };

  const bestEffortCleanup = async () => {
    const nss = await ctr(["namespaces", "ls", "-q"], { timeoutMs: 10_000 });
    const list =
      nss.code === 0
        ? nss.stdout
            .split("\n")
            .map((s) => s.trim())
            .filter(Boolean)
        : [namespace];
    for (const ns of list) {
      const q = async (a: string[]) => {
        const r = await ctr(a, { namespace: ns, timeoutMs: 15_000 });
        return r.code === 0
          ? r.stdout
              .split("\n")
              .map((s) => s.trim())
              .filter(Boolean)
          : [];
      };
      for (const t of await q(["tasks", "ls", "-q"])) await ctr(["tasks", "delete", "-f", t], { namespace: ns, timeoutMs: 15_000 });
      for (const c of await q(["containers", "ls", "-q"])) await ctr(["containers", "rm", c], { namespace: ns, timeoutMs: 15_000 });
      const images = await q(["images", "ls", "-q"]);
      if (images.length) await ctr(["images", "rm", "--sync", ...images], { namespace: ns, timeoutMs: 30_000 });
      await ctr(["namespaces", "rm", ns], { namespace: ns, timeoutMs: 10_000 });
    }
  };

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      try {
        await bestEffortCleanup();
      } catch {}
    }
    await terminate();
    // Anything left that belongs to us: shims (their -address is ours, their cwd a bundle
    // under state), and containers in our namespace's cgroups.
    for (let round = 0; round < 5; round++) {
      const left = processesUsing(dir);
      if (left.length === 0) break;
      for (const { pid, cmdline } of left) {
        const sock = shimSocketOf(cmdline);
        if (sock) rmSync(sock, { force: true }); // a killed shim leaves its socket behind
        try {
          process.kill(pid, "SIGKILL");
        } catch {}
      }
      await sleep(50);
    }
    if (opts.namespace === undefined) {
      for (const cg of namespaceCgroups(namespace)) killCgroupTree(cg);
      // SIGKILL is delivered at once but a process leaves its cgroup only once it has exited,
      // which takes longer on a loaded machine: wait for that (bounded), then remove the trees.
      const deadline = Date.now() + 10_000;
      while (!namespaceCgroups(namespace).every(cgroupTreeEmpty) && Date.now() < deadline) {
        for (const cg of namespaceCgroups(namespace)) killCgroupTree(cg);
        await sleep(20);
      }
      for (const cg of namespaceCgroups(namespace)) removeCgroupTree(cg);
      rmSync(join("/run/containerd/runc", namespace), { recursive: true, force: true });
    }
    for (const mp of mountsUnder(dir)) Bun.spawnSync(["umount", "-l", mp]);
    rmSync(dir, { recursive: true, force: true });
  };

  await launch();

  return {
    dir,
    address,
    ttrpcAddress: `${address}.ttrpc`,
    namespace,
    root,
    state,
    configPath,
    logPath,
    binary,
    ctrBinary,
    get pid() {
      return proc && proc.exitCode === null && proc.signalCode === null ? proc.pid : 0;
    },
    get startMs() {
      return startMs;
    },
    ctr,
    ctrSpawn,
    ctrArgv,
    taskList,
    watchExits,
    async restart() {
      await terminate();
      await launch();
    },
    stop,
    logTail,
  };
}
