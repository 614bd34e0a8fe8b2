// The shared-mode daemon (build/bin/containerd-wasmtimed) as a test starts it: its own
// socket in a temp dir, its own compile cache (so compiles can be counted from zero), its
// log kept for the assertion messages. sharedEnv: a shared-mode suite's setting, a daemon and
// a private containerd that finds it, in one temp dir, and all of it gone after stop().

import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import { liveDaemons, processStart } from "../../src/daemon/daemon-files.ts";
import { ManagerDefinition } from "../../src/daemon/gen/bunwasi/manager/v1/manager.ts";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { Client, type ServiceClient } from "../../src/ttrpc/index.ts";
import { mountsUnder } from "./containerd.ts";
import { REPO, type ShimEnv, type ShimEnvOptions, shimEnv } from "./shim-env.ts";
import { until } from "./until.ts";

export const SHARED_RUNTIME = "io.containerd.wasmtimed.v1";
export const DAEMON = join(REPO, "build/bin/containerd-wasmtimed");
/** The manager socket's name in a test daemon's directory. */
const SOCKET = "wasmtimed.sock";

export interface Daemon {
  readonly socket: string;
  readonly pid: number;
  readonly proc: Bun.Subprocess;
  /** What containerd needs in its environment to find this daemon. */
  readonly env: Record<string, string>;
  log(): string;
  /** A connected manager client (close the client when done). */
  manager(): Promise<{ client: Client; manager: ServiceClient<typeof ManagerDefinition> }>;
  /** The sandboxes the daemon serves for pod (or task) `id` of containerd namespace `namespace` (ListSandboxes). */
  sandboxesOf(namespace: string, id: string): Promise<{ id: string; namespace: string; address: string; containers: number }[]>;
  /** Open file descriptors of the daemon now. */
  fdCount(): number;
  /** Signals the daemon and waits for it to exit; resolves with its exit code or signal. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
  /** Starts it again on the same socket (after a stop). */
  restart(): Promise<void>;
}

/** `args`: more of the daemon's flags (e.g. --default-memory-limit). */
export async function startDaemon(dir: string, extraEnv: Record<string, string> = {}, args: string[] = []): Promise<Daemon> {
  // Built here, not only by shimEnv/criEnv: a suite may start its daemon first.
  const built = Bun.spawnSync(
    ["bash", join(REPO, "scripts/build-shim.sh"), join(REPO, "build/bin"), "containerd-wasmtimed", "containerd-shim-wasmtimed-v1"],
    {
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  if (built.exitCode !== 0) throw new Error(`build-shim.sh failed: ${built.stderr.toString()}`);
  mkdirSync(dir, { recursive: true });
  const socket = join(dir, SOCKET);
  const logPath = join(dir, "daemon.log");
  const env = { ...(process.env as Record<string, string>), BUNWASI_EXEC_ROOT: join(dir, "exec"), ...extraEnv };
  let proc!: Bun.Subprocess;
  const launch = async () => {
    // Appended to, so a restarted daemon's log follows the first one's.
    const logFd = openSync(logPath, "a");
    try {
      proc = Bun.spawn([DAEMON, "--socket", socket, "--debug", ...args], { env, stdin: "ignore", stdout: "ignore", stderr: logFd });
    } finally {
      closeSync(logFd);
    }
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`daemon exited at start: ${safeRead(logPath)}`);
      try {
        const c = await Client.connect(socket, { timeoutMs: 500 });
        c.close();
        return;
      } catch {}
      if (Date.now() > deadline) throw new Error(`daemon did not listen on ${socket}: ${safeRead(logPath)}`);
      await Bun.sleep(20);
    }
  };
  await launch();
  const d: Daemon = {
    socket,
    get pid() {
      return proc.pid;
    },
    get proc() {
      return proc;
    },
    env: { BUNWASI_DAEMON_SOCKET: socket },
    log: () => safeRead(logPath),
    manager: async () => {
      const client = await Client.connect(socket, { timeoutMs: 2000 });
      return { client, manager: client.service(ManagerDefinition) };
    },
    sandboxesOf: async (namespace, id) => {
      const { client, manager } = await d.manager();
      try {
        return (await manager.listSandboxes({})).sandboxes.filter((s) => s.id === id && s.namespace === namespace);
      } finally {
        client.close();
      }
    },
    fdCount: () => readdirSync(`/proc/${proc.pid}/fd`).length,
    stop: async (signal = "SIGTERM") => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await proc.exited;
      return proc.signalCode ?? proc.exitCode ?? -1;
    },
    restart: () => launch(),
  };
  return d;
}

/** ShimEnv's options for a shared-mode suite: `dir` is sharedEnv's, `env` gets the daemon's added. */
export type SharedContainerd = Omit<ShimEnvOptions, "dir">;

export interface SharedEnvOptions {
  /** mkdtemp prefix of the directory that holds it all (short: sockets live in it). */
  prefix: string;
  /** The daemon's extra flags (e.g. --default-memory-limit); a function when they name a path in the directory. */
  daemonArgs?: string[] | ((dir: string) => string[]);
  /** containerd's options (its binary, more environment, PATH); a function when they need the directory. */
  containerd?: SharedContainerd | ((dir: string) => SharedContainerd);
  /** How stop() ends the daemons (default SIGKILL: what they leave is removed after). */
  stopSignal?: NodeJS.Signals;
}

export interface SharedEnv {
  /** The directory of it all: the daemon's in `d`, containerd's beside it. */
  readonly dir: string;
  /** The daemon's directory: its socket, sandboxes, log, compile cache. */
  readonly daemonDir: string;
  readonly daemon: Daemon;
  /** A private containerd with our shims, whose thin shim finds `daemon`. */
  readonly env: ShimEnv;
  /** Starts another daemon on the same directory (e.g. with --take-over); stop() stops it too. */
  anotherDaemon(args: string[]): Promise<Daemon>;
  /**
   * containerd first (its clean-up deletes the tasks through the daemon), then the daemons (the
   * last started first, then any successor a daemon started itself), then what they left: the mounts under their directories, the shims'
   * state of the namespace (runtime root, work dirs), the directory.
   */
  stop(): Promise<void>;
}

/** A daemon in `<dir>/d` and a containerd in `<dir>/<basename(dir)>` (it names the namespace: unique per run). */
export async function sharedEnv(o: SharedEnvOptions): Promise<SharedEnv> {
  const dir = mkdtempSync(o.prefix);
  const daemonDir = join(dir, "d");
  const daemons: Daemon[] = [];
  let env: ShimEnv | undefined;
  const stop = async () => {
    const ns = env?.cd.namespace;
    await env?.stop();
    const signal = o.stopSignal ?? "SIGKILL";
    for (const d of daemons.toReversed()) await d.stop(signal);
    // Daemons the daemons started themselves (an overflow's successors, src/daemon/overflow.ts):
    // not our children, so found by their files and waited for by their pids.
    await stopOthers(join(daemonDir, SOCKET), signal);
    const left = ns ? [daemonDir, runtimeRoot(ns), containerStateDir(ns)] : [daemonDir];
    // Deepest first, and before any removal, so that none reaches through a mount.
    for (const m of left.flatMap((p) => mountsUnder(p)).sort((a, b) => b.length - a.length)) Bun.spawnSync(["umount", "-l", m]);
    for (const d of left.slice(1)) rmSync(d, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    daemons.push(await startDaemon(daemonDir, {}, typeof o.daemonArgs === "function" ? o.daemonArgs(dir) : (o.daemonArgs ?? [])));
    const daemon = daemons[0] as Daemon;
    const c = typeof o.containerd === "function" ? o.containerd(dir) : (o.containerd ?? {});
    env = await shimEnv({ ...c, env: { ...c.env, ...daemon.env }, dir: join(dir, basename(dir)) });
    return {
      dir,
      daemonDir,
      daemon,
      env,
      anotherDaemon: async (args) => {
        const d = await startDaemon(daemonDir, {}, args);
        daemons.push(d);
        return d;
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * Signals every live daemon of `socket`'s directory (liveDaemons: those a test did not start
 * are successors of its daemons) and waits until each has exited. Only processes whose command
 * line names `socket`: a pid in a file of a daemon killed earlier may be another process's by now.
 */
async function stopOthers(socket: string, signal: NodeJS.Signals): Promise<void> {
  const ours = liveDaemons(socket).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(socket);
    } catch {
      return false;
    }
  });
  for (const pid of ours) {
    try {
      process.kill(pid, signal);
    } catch {}
  }
  for (const pid of ours) await until(`daemon ${pid} to exit`, () => processStart(pid) === undefined);
}

function safeRead(p: string): string {
  try {
    return readFileSync(p, "utf8");
  } catch {
    return "(no log)";
  }
}
