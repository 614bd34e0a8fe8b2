// containerd-wasmtimed: the shared-mode daemon. One process runs every pod's sandbox: one
// engine, one compile cache, one exit watcher; wasm containers run on its threads, native
// ones under runc with the daemon as their child subreaper.
//
//   containerd-wasmtimed [--socket PATH] [--take-over [--detach]] [--pid-file PATH] [--default-memory-limit SIZE] [--fd-budget N] [--metrics-address ADDR] [--debug]
//
// Serves the manager service (./manager.ts) on PATH; each sandbox serves containerd's Task
// API on a socket of its own beside it (<dir of PATH>/sandboxes/). One daemon per directory:
// a second one refuses to start (<dir of PATH>/daemon.lock, ./lock.ts), unless started with
// --take-over: then the serving one hands over (./generations.ts) and drains. A daemon near its
// open-file budget starts such a successor itself (./overflow.ts). SIGTERM/SIGINT stop it
// gracefully: no new sandboxes, wasm containers are sent SIGTERM, then what containerd does
// not finish within the grace period is closed. With --metrics-address it serves Prometheus
// text at /metrics there (./metrics-server.ts, loaded only then).

import { chmodSync, closeSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { embeddedScript } from "../common/compiled.ts";
import { SHIM_VERSION } from "../common/constants.ts";
import { SIGNALS } from "../common/signals.ts";
import { flushTraces, startTracing, tracingOn } from "../common/trace.ts";
import type { Engine, Runner } from "../engines/engine.ts";
import { ExitWatcher } from "../linux/exit-watcher.ts";
import { joinGroupSlots } from "../linux/idmap.ts";
import { RLIM_INFINITY } from "../linux/libc.ts";
import { asyncWatchReads } from "../linux/proc-async.ts";
import { findRuntime } from "../linux/runc.ts";
import { becomeSubreaper } from "../linux/subreaper.ts";
import { shimPaths } from "../runtime-v2/paths.ts";
import { spanPerCall } from "../runtime-v2/task-server.ts";
import { EventsConnections } from "../task/events.ts";
import { probeCgroupV2 } from "../task/stats.ts";
import { bindUnixSocket, requireSameUser, Server } from "../ttrpc/index.ts";
import { countingCompiles } from "./compiles.ts";
import { type HandOverResponse, ManagerDefinition } from "./gen/bunwasi/manager/v1/manager.ts";
import { Generations, takeOverLock } from "./generations.ts";
import { GAVE_BACK, giveBack, giveBackWhenQuiet } from "./give-back.ts";
import { lockDaemonDir } from "./lock.ts";
import { stderrLogger } from "./log.ts";
import { Manager } from "./manager.ts";
import { type MetricsAddress, parseMetricsAddress } from "./metrics-address.ts";
import type { MetricsEndpoint } from "./metrics-server.ts";
import { FDS_PER_CONTAINER, raiseNofile } from "./nofile.ts";
import { defaultFdBudget, Overflow, systemdUnit } from "./overflow.ts";
import { DAEMON_SOCKET_ENV, defaultDaemonSocket, type SharedModeNames } from "./paths.ts";
import type { DaemonShared } from "./sandbox-host.ts";
import { METRICS_SCRIPT } from "./scripts.ts";
import { markWorkDir, Sweep, thisDaemon } from "./sweep.ts";

/**
 * After a kill, how long a module blocked in a host call (a sleep, a read on an empty fifo)
 * may take before its run is ended without it. In the daemon the task's exit must not wait
 * for the host call: the Task service reports it at once, the thread ends when the call returns.
 */
export const DAEMON_KILL_GRACE_MS = 20;
/** How long a SIGTERM'd daemon waits for containerd to finish its sandboxes. */
const STOP_GRACE_MS = 10_000;
/**
 * The memory limit of a wasm container whose spec sets none: every module in the daemon is
 * bounded (its linear memories and tables together), since what it takes is the daemon's.
 */
export const DEFAULT_MEMORY_LIMIT = 512 * 2 ** 20;

export interface DaemonOptions {
  /** The daemon's, its thin shim's and its runtime's names (from the entry file, src/bin). */
  names: SharedModeNames;
  engine: Engine;
}

/**
 * The most WASI handles (files, directories, stdio) one wasm container may hold open in the
 * daemon, unless its spec's RLIMIT_NOFILE is lower: every one is an fd of the daemon's, which
 * all pods share. `--max-open-files` changes it.
 */
export const DEFAULT_MAX_OPEN_FILES = 1024;

const USAGE = (
  n: SharedModeNames,
) => `usage: ${n.daemon} [--socket PATH] [--take-over [--detach]] [--pid-file PATH] [--default-memory-limit SIZE] [--max-open-files N] [--fd-budget N] [--metrics-address ADDR] [--debug]

The bunwasi shared-mode daemon: runs the wasm containers of every pod in one process
(runtime ${n.runtime}, through ${n.thinShim}).

  --socket PATH   serve the manager service here (default ${defaultDaemonSocket(n.daemon)});
                  containerd must see the same path in ${DAEMON_SOCKET_ENV} if not the default;
                  one daemon per directory (its sandboxes/ and daemon.lock are beside it)
  --take-over     start even if a daemon serves PATH: it hands over (new pods come here), keeps
                  serving its own pods until containerd has deleted them, then exits; with no
                  daemon there, just start. An upgrade: systemctl reload ${n.daemon}
  --detach        with --take-over: return once the new daemon serves, leaving it running
                  (what the unit's ExecReload runs)
  --pid-file PATH write the daemon's pid here once it serves (systemd's PIDFile=)
  --default-memory-limit SIZE
                  the memory limit of a wasm container whose spec sets none (bytes, or with
                  a suffix K, M, G, Ki, Mi, Gi; default 512Mi; 0: none, unbounded)
  --max-open-files N
                  the most files, directories and stdio one wasm container may hold open
                  (default ${DEFAULT_MAX_OPEN_FILES}; lower if its spec's RLIMIT_NOFILE is)
  --fd-budget N   once the daemon holds N open files, it starts a successor (as --take-over)
                  that takes the new pods, and serves its own until they are deleted
                  (default: 90% of its open-file limit; for tests and operators: it only
                  moves where new pods go, no limit of a container's changes)
  --metrics-address ADDR
                  serve Prometheus metrics at http://ADDR/metrics: unix:///path/metrics.sock
                  (made mode 0600) or a loopback TCP address (127.0.0.1:PORT, [::1]:PORT,
                  localhost:PORT); any other address is refused: the figures name every
                  pod's containers and are served without authentication (default: off)
  --debug         log debug lines too
  --version       print the version
  -h, --help      print this

Logs in logfmt on stderr. SIGTERM stops it gracefully.
`;

export interface DaemonArgs {
  socket: string;
  /** Undefined: no default limit. */
  defaultMemoryLimit: number | undefined;
  /** The most WASI handles one wasm container may hold open (DEFAULT_MAX_OPEN_FILES). */
  maxOpenFiles: number;
  /** Open files at which a successor takes the new pods (./overflow.ts); undefined: the default. */
  fdBudget: number | undefined;
  /** Where to serve metrics; undefined: nowhere (the default). */
  metrics: MetricsAddress | undefined;
  debug: boolean;
  /** Ask the daemon serving the socket to hand over, rather than refuse to start. */
  takeOver: boolean;
  detach: boolean;
  pidFile: string | undefined;
  help: boolean;
  version: boolean;
}

/** The switches: arguments that take no value. */
const FLAGS = new Set(["--take-over", "--detach", "--debug", "-debug", "--help", "-help", "--version"]);

export function parseDaemonArgs(argv: string[], defaultSocket: string): DaemonArgs {
  const out: DaemonArgs = {
    socket: defaultSocket,
    defaultMemoryLimit: DEFAULT_MEMORY_LIMIT,
    maxOpenFiles: DEFAULT_MAX_OPEN_FILES,
    fdBudget: undefined,
    metrics: undefined,
    debug: false,
    takeOver: false,
    detach: false,
    pidFile: undefined,
    help: false,
    version: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const [name, inline] =
      a.startsWith("--") && a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    if (name === "--socket" || name === "-socket") {
      const v = inline ?? argv[++i];
      if (!v) throw new Error("--socket needs a path");
      out.socket = v;
    } else if (name === "--default-memory-limit") {
      const v = inline ?? argv[++i];
      if (!v) throw new Error("--default-memory-limit needs a size");
      const n = parseSize(v);
      if (n === undefined) throw new Error(`--default-memory-limit: ${JSON.stringify(v)} is not a size (bytes, or 512Mi, 1G, ...)`);
      out.defaultMemoryLimit = n > 0 ? n : undefined;
    } else if (name === "--max-open-files") {
      const v = Number(inline ?? argv[++i]);
      if (!Number.isSafeInteger(v) || v < 1) throw new Error("--max-open-files needs a positive number");
      out.maxOpenFiles = v;
    } else if (name === "--fd-budget") {
      const v = Number(inline ?? argv[++i]);
      if (!Number.isSafeInteger(v) || v < 1) throw new Error("--fd-budget needs a positive number");
      out.fdBudget = v;
    } else if (name === "--metrics-address") {
      const v = inline ?? argv[++i];
      if (!v) throw new Error("--metrics-address needs an address (unix:///path/metrics.sock or 127.0.0.1:PORT)");
      out.metrics = parseMetricsAddress(v);
    } else if (name === "--pid-file") {
      const v = inline ?? argv[++i];
      if (!v) throw new Error("--pid-file needs a path");
      out.pidFile = v;
    } else if (FLAGS.has(name) && inline !== undefined) {
      // A switch takes no value: `--detach=x` accepted as --detach would also pass
      // successorArgs' filter and detach the successor again.
      throw new Error(`${name} takes no value`);
    } else if (name === "--take-over") out.takeOver = true;
    else if (name === "--detach") out.detach = true;
    else if (name === "--debug" || name === "-debug") out.debug = true;
    else if (name === "--help" || name === "-help" || name === "-h" || name === "help") out.help = true;
    else if (name === "--version" || name === "-v") out.version = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (out.detach && !out.takeOver) throw new Error("--detach goes with --take-over");
  return out;
}

const UNITS: Record<string, number> = { "": 1, K: 1e3, M: 1e6, G: 1e9, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30 };

/** Bytes from "536870912", "512Mi", "1G" (Kubernetes' suffixes); undefined if it is none of those. */
export function parseSize(s: string): number | undefined {
  const m = /^(\d+)(|K|M|G|Ki|Mi|Gi)$/.exec(s.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * (UNITS[m[2] as string] as number);
  return Number.isSafeInteger(n) ? n : undefined;
}

export async function runDaemon(o: DaemonOptions, argv: string[] = process.argv.slice(2)): Promise<void> {
  const name = o.names.daemon;
  let args: ReturnType<typeof parseDaemonArgs>;
  try {
    args = parseDaemonArgs(argv, defaultDaemonSocket(name));
  } catch (e) {
    process.stderr.write(`${name}: ${(e as Error).message}\n${USAGE(o.names)}`);
    process.exit(2);
  }
  if (args.help) {
    process.stdout.write(USAGE(o.names));
    return;
  }
  if (args.version) {
    process.stdout.write(`${name} (${SHIM_VERSION})\n`);
    return;
  }
  if (args.detach) return detach(name, args, argv);
  const log = stderrLogger(args.debug, name);
  const generations = new Generations(args.socket);
  // First of all: a second daemon on this socket (or its directory) must leave the first one's
  // socket and sandboxes alone (./lock.ts); with --take-over, the first one hands over first.
  // The lock is held until the process ends or it hands over in turn.
  let lockFd: number;
  try {
    if (args.takeOver) {
      mkdirSync(dirname(args.socket), { recursive: true, mode: 0o711 });
      lockFd = (await takeOverLock(generations, (m) => log(m))).fd;
    } else lockFd = lockDaemonDir(args.socket);
  } catch (e) {
    process.stderr.write(`${name}: ${(e as Error).message}\n`);
    process.exit(1);
  }
  const soft = raiseNofile(log);
  const fdBudget = args.fdBudget ?? defaultFdBudget(soft, RLIM_INFINITY);
  becomeSubreaper();
  // Before any thread that touches a module's files exists: they inherit these groups, through
  // which a container's additional groups reach its idmapped view (../linux/idmap.ts).
  const slots = joinGroupSlots();
  if (slots) log(`${slots}: a container's additional groups will not reach its files`, "warning");
  const watcher = new ExitWatcher({ reads: asyncWatchReads, onSweepError: (e) => log(`reaping orphans: ${String(e)}`, "warning") });
  const paths = shimPaths(process.env);
  const self = thisDaemon(args.socket);
  // Before any server exists: each adds a span per call only if tracing is on by then. Loads
  // nothing unless the OTEL_* variables ask for traces (../common/trace.ts).
  await startTracing(process.env, name, log);
  const counting = countingCompiles(o.engine);
  let running = 0;
  /** Threads the engine started for runs, alive (a run's own, a pool's). */
  let runThreads = 0;
  // Memory of ended runs and closed sandboxes goes back to the kernel a second after the last
  // such end, at most once every 10 s (./give-back.ts). Each pass says so, with what was left:
  // the one with none of them is the pass after the last delete (what a test waits for).
  const ended = giveBackWhenQuiet({
    quietMs: 1000,
    minIntervalMs: 10_000,
    pass: () => {
      const mib = (b: number) => (b / 2 ** 20).toFixed(1);
      const rss = process.memoryUsage.rss();
      const collections = giveBack();
      // Bun.shrink's work (JSC's shrinkFootprintWhenIdle: compiled code dropped, one more full
      // collection, the allocator's free pages released) runs only once this callback has
      // returned (JSC's whenIdle): the line, with what the pass left, comes after it. Read in
      // the callback, it missed 15 MiB of anonymous memory that fell 20 ms later, after 300 runs.
      setImmediate(() => {
        const { heapTotal, heapUsed } = process.memoryUsage();
        log(
          `${GAVE_BACK}: RSS ${mib(rss)} → ${mib(process.memoryUsage.rss())} MiB (JS heap ${mib(heapUsed)} of ${mib(heapTotal)}, ${collections} collections); ${manager.sandboxes.size} sandboxes, ${running} wasm runs, ${runThreads} run threads`,
        );
      });
    },
  });
  let runner: Promise<Runner> | null = null;
  // Loaded by path only when asked for: a daemon without metrics holds none of their code.
  const metricsModule = args.metrics ? await loadMetrics() : undefined;
  const metrics = metricsModule ? new metricsModule.DaemonMetrics() : undefined;
  const shared: DaemonShared = {
    paths,
    log,
    watcher,
    engine: counting.engine,
    runner: () => {
      // Root for every container: its runs' threads give up the capabilities over files, and
      // each module's view is its container's user's (oci/wasi-view.ts mountViewAs).
      runner ??= o.engine.load({
        cacheDir: paths.compileCacheDir,
        killGraceMs: DAEMON_KILL_GRACE_MS,
        noFileCapabilities: true,
        pools: true,
        // What an ended thread held is free only once it has ended: a pass after the last one.
        onRunThreads: (alive) => {
          if (alive < runThreads) ended();
          runThreads = alive;
        },
      });
      return runner;
    },
    runtimeBinary: findRuntime(process.env.BUNWASI_RUNTIME),
    cgroupV2: await probeCgroupV2(),
    pid: process.pid,
    ...(args.defaultMemoryLimit !== undefined ? { defaultMemoryBytes: args.defaultMemoryLimit } : {}),
    maxOpenFiles: args.maxOpenFiles,
    onRunning: (d) => {
      running += d;
      if (d < 0) ended();
    },
    ...(metrics ? { observe: metrics } : {}),
    markWorkDir: (c) => markWorkDir(self, c),
    eventsConnections: new EventsConnections(),
    swept: (ns, id) => sweep.settled(ns, id),
  };
  // Sandbox sockets of an earlier daemon (killed) are dead: removed. A draining daemon's (one
  // that handed over) live on: its pid is in their names (./generations.ts).
  const { removed } = generations.prepare();
  if (removed > 0) log(`removed ${removed} sockets of dead daemons`);
  // What dead daemons of this directory left of their containers (a crash: containerd's
  // `shim delete` of each may not have run, or not to the end): found now, cleaned up once the
  // manager listens (./sweep.ts).
  const sweep = new Sweep(paths.stateRoot, log, self);
  mkdirSync(paths.compileCacheDir, { recursive: true });
  // Near its fd budget, the daemon hands the new pods to a successor of its own (./overflow.ts).
  const overflow =
    fdBudget === undefined
      ? undefined
      : new Overflow({
          budget: fdBudget,
          fdsPerContainer: FDS_PER_CONTAINER,
          liveDaemons: () => generations.others().length + 1,
          // The manager's state: one hand-over flag for both.
          handedOver: () => manager.handingOver,
          log,
          startSuccessor: () => {
            // Under systemd its reload starts the successor (and makes it the unit's main process).
            const unit = systemdUnit(readFileSync("/proc/self/cgroup", "utf8"), process.env);
            if (unit) {
              const ctl = Bun.spawn(["systemctl", "reload", unit], { stdio: ["ignore", "inherit", "inherit"] });
              return { pid: ctl.pid, exited: ctl.exited, what: `the daemon systemctl reload ${unit} (pid ${ctl.pid}) starts` };
            }
            const child = spawnDaemon(name, successorArgs(argv));
            return { pid: child.pid, exited: child.exited };
          },
        });
  const manager: Manager = new Manager({
    shared,
    generations,
    compiled: () => counting.compiled,
    running: () => running,
    daemonName: name,
    ...(overflow ? { beforeNewSandbox: () => overflow.beforeNewSandbox() } : {}),
    onSandboxClosed: () => {
      ended();
      if (manager.handingOver && manager.sandboxes.size === 0) void exitDrained();
    },
    onHandOver: async (successor): Promise<HandOverResponse> => {
      log(`daemon ${successor} takes over: no new sandboxes here; serving the ${manager.sandboxes.size} there are until they are deleted`);
      manager.startHandingOver(successorServes());
      overflow?.stopWaiting();
      // Its metrics address is the successor's from now on.
      await endpoint?.close();
      endpoint = undefined;
      // Last: from here the successor may take the lock (nothing of this daemon's needs it).
      closeSync(lockFd);
      return { pid: process.pid, sandboxes: manager.sandboxes.size };
    },
  });
  // Before the manager listens: a daemon asked for metrics it cannot serve stops here.
  let endpoint: MetricsEndpoint | undefined;
  if (metricsModule && metrics && args.metrics) {
    try {
      endpoint = await metricsModule.serveMetrics(args.metrics, metrics, {
        sandboxes: () => manager.sandboxes.values(),
        compiled: () => counting.compiled,
        running: () => running,
      });
    } catch (e) {
      process.stderr.write(`${name}: ${(e as Error).message}\n`);
      process.exit(1);
    }
    log(`serving metrics on ${endpoint.address}/metrics`);
  }
  // Only root (containerd, its shims) may ask for sandboxes: a peer check on every connection,
  // so the short window before the chmod below lets no one in either.
  const server = new Server({
    onError: (e) => log(`manager ttrpc: ${String(e)}`, "error"),
    handshaker: requireSameUser(),
    // A manager request's id is its sandbox's (a pod's; for a lone container, the container's).
    ...(tracingOn() ? { interceptors: [spanPerCall({ idAttribute: "containerd.sandbox.id" })] } : {}),
  });
  server.register(ManagerDefinition, manager);
  // Bound beside the path, then renamed over it: a thin shim finds a listener there at every
  // moment, the predecessor's until the rename, this one's after; a stale socket is replaced.
  // Served from its fd, so closing it never unlinks the path (a successor's by then).
  const fresh = `${args.socket}.${process.pid}`;
  rmSync(fresh, { force: true });
  const fd = bindUnixSocket(fresh);
  // Only root (containerd, its shims) may ask for sandboxes.
  chmodSync(fresh, 0o600);
  renameSync(fresh, args.socket);
  const publicIno = statSync(args.socket).ino;
  server.listen({ fd });
  // The same service at a path of this daemon's own: a successor forwards there what this one
  // still has (./generations.ts).
  const own = new Server({ onError: (e) => log(`manager ttrpc: ${String(e)}`, "error"), handshaker: requireSameUser() });
  own.register(ManagerDefinition, manager);
  own.listen(generations.ownSocket);
  chmodSync(generations.ownSocket, 0o600);
  if (args.pidFile) writePidFile(args.pidFile);
  if (sweep.found > 0) {
    log(`cleaning up ${sweep.found} containers left by dead daemons`);
    void sweep
      .run()
      .then(({ found, failed }) =>
        log(`cleaned up ${found} containers left by dead daemons${failed > 0 ? ` (${failed} not whole: see the warnings above)` : ""}`),
      );
  }
  log(
    `serving the manager service on ${args.socket} (engine ${o.engine.name}, state ${paths.stateRoot}, cache ${paths.compileCacheDir}, default memory limit ${args.defaultMemoryLimit ?? "none"}, fd budget ${fdBudget ?? "none"})`,
  );

  /** Is the manager socket's path still this daemon's (no successor renamed its own over it)? */
  const ownsPath = () => {
    try {
      return statSync(args.socket).ino === publicIno;
    } catch {
      return false;
    }
  };
  // After a hand-over: resolves once the successor's socket is at the path. Until then this one
  // still listens there (a thin shim finds a listener either way); new pods wait for it.
  // The listener on the path is shut down only after that: a pod that waited for the rename is
  // asked of the successor on its connection, which the shutdown would close (it waits 1 s
  // for calls in flight, this one among them).
  function successorServes(): Promise<void> {
    const serves = (async () => {
      while (ownsPath()) await Bun.sleep(20);
      log("the successor serves the manager socket");
    })();
    void serves.then(async () => {
      await server.shutdown(1000);
      if (manager.sandboxes.size === 0) void exitDrained();
    });
    return serves;
  }
  const leave = async () => {
    await Promise.all([own.shutdown(1000), endpoint?.close()]);
    if (args.pidFile) removePidFile(args.pidFile);
    await flushTraces();
    process.exit(0);
  };
  let exiting = false;
  const exitDrained = async () => {
    if (exiting || ownsPath()) return;
    exiting = true;
    log("handed over and every sandbox deleted: exiting");
    await leave();
  };

  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    log(`${why}: stopping; no new sandboxes, wasm containers get SIGTERM`);
    manager.drain();
    // The path is removed only while it is this daemon's (not once a successor took it).
    if (ownsPath()) rmSync(args.socket, { force: true });
    await server.shutdown(1000);
    for (const sb of manager.sandboxes.values()) sb.killWasm(SIGNALS.SIGTERM);
    // containerd sees the exits and deletes the tasks; each sandbox closes with its last one.
    const deadline = Date.now() + STOP_GRACE_MS;
    while (manager.sandboxes.size > 0 && Date.now() < deadline) await Bun.sleep(50);
    for (const sb of manager.sandboxes.values()) sb.killWasm(SIGNALS.SIGKILL);
    await Promise.all([...manager.sandboxes.values()].map((sb) => sb.close()));
    log("stopped");
    await leave();
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

/**
 * This binary again as a daemon with `argv`, in a process group of its own (a Ctrl-C or a
 * signal to the starter's group does not reach it), logging where this one logs. Bun waits for
 * it (it holds a pidfd: the exit watcher's orphan sweep leaves it alone); unref'd, so that a
 * starter may exit first.
 */
function spawnDaemon(name: string, argv: string[]): Bun.Subprocess<"ignore", "inherit", "inherit"> {
  // As started: our one binary picks the program by argv[0].
  const cmdline = readFileSync("/proc/self/cmdline", "latin1").split("\0");
  const child = Bun.spawn(["/proc/self/exe", ...argv], {
    argv0: cmdline[0] || name,
    detached: true,
    stdio: ["ignore", "inherit", "inherit"],
  });
  child.unref();
  return child;
}

/** A successor's arguments: this daemon's, with --take-over (an overflow is a hand-over), without --detach. */
export function successorArgs(argv: string[]): string[] {
  const out = argv.filter((a) => a !== "--detach");
  return out.includes("--take-over") ? out : [...out, "--take-over"];
}

/** The pid file, replaced whole (systemd reads it after a reload: the unit's main process is its pid). */
function writePidFile(path: string): void {
  const tmp = `${path}.${process.pid}`;
  writeFileSync(tmp, `${process.pid}\n`, { mode: 0o644 });
  renameSync(tmp, path);
}

/** Removed only while it names this daemon (a successor's stays). */
function removePidFile(path: string): void {
  try {
    if (readFileSync(path, "utf8") === `${process.pid}\n`) rmSync(path, { force: true });
  } catch {}
}

/**
 * --take-over --detach (the unit's ExecReload): the daemon itself started in a session of its
 * own, without --detach; returns once it serves (its pid in the pid file, or its manager
 * socket at the path), exits 1 if it exits first. systemd then reads the pid file: the new
 * daemon is the unit's main process, the old one drains beside it.
 */
async function detach(name: string, args: DaemonArgs, argv: string[]): Promise<never> {
  const child = spawnDaemon(name, successorArgs(argv));
  let exited: number | null = null;
  void child.exited.then((code) => {
    exited = code;
  });
  const ours = new Generations(args.socket, child.pid ?? -1).ownSocket;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited !== null) {
      process.stderr.write(`${name}: the new daemon exited (${exited}) before serving\n`);
      process.exit(1);
    }
    let served = false;
    try {
      served = args.pidFile ? readFileSync(args.pidFile, "utf8") === `${child.pid}\n` : statSync(ours).isSocket();
    } catch {}
    if (served) {
      child.unref();
      process.stdout.write(`${name}: daemon ${child.pid} serves ${args.socket}\n`);
      process.exit(0);
    }
    if (Date.now() > deadline) {
      process.stderr.write(`${name}: the new daemon (pid ${child.pid}) did not serve within 60 s; it is left running\n`);
      process.exit(1);
    }
    await Bun.sleep(50);
  }
}

/** ./metrics-server.ts, by path (its embedded copy in a compiled binary): not in the daemon's bundle. */
async function loadMetrics(): Promise<typeof import("./metrics-server.ts")> {
  return import(embeddedScript(METRICS_SCRIPT.href));
}
