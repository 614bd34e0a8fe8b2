// The executor: the process an OCI runtime (runc) starts for a wasm container
// (docs/ARCHITECTURE.md, "One Create").
//
//   <shim> executor --plan FILE [--engine-dir DIR] [--engine-opt KEY=VALUE]... [--compiled FILE]
//                   [--root-dir DIR] [--kill-grace-ms N] [--stats]
//
// What it runs (module, export, argv, env, cwd, memory limit) is the RunPlan the shim wrote
// (./run-plan.ts), read from FILE; how it runs (the engine's files, the module's compiled
// artifact, where the module's view is) comes from the flags, which the shim writes too. Nothing is taken from
// this process's environment, which holds only its VM settings (src/common/vm-env.ts): the
// container's env is the module's, so an image's LD_PRELOAD or BUNWASI_* reach no part of us.
//
// It runs INSIDE the container: root is the container's rootfs, it is usually PID 1 of its pid
// namespace, and fds 0/1/2 are whatever runc wired (containerd's fifos). It is started through
// the dynamic loader bind-mounted at /.bunwasi (see src/oci/executor-dir.ts), so
// process.execPath is the loader, not us: the engine finds its files through --engine-dir
// (the mount point), not beside execPath.
//
// The engine is the shim's (the binary's entry registers it, src/shim/shim.ts). PID 1 gets no
// default signal dispositions from the kernel, so without handlers a SIGTERM from `runc kill`
// would be dropped: each handler kills the run with that signal (epoch interrupt), and we
// exit 128+s. Two ways to run:
//  - on this thread (Runner.runHere), the default: the handlers are C (./kill-signals.ts), so
//    they work while this thread is inside wasm, and the process has one JS VM, not two;
//  - on a thread of the engine's (Runner.run), while this thread waits and turns signals into
//    an abort in JavaScript: when the engine has no runHere, the C library is not in the
//    engine directory, or BUNWASI_EXECUTOR_WORKER=1 is in the executor's own environment
//    (whoever starts it by hand; the shim never sets it).

import { closeSync, openSync, readdirSync, readFileSync, readSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { EXIT_ENGINE_ERROR, KILL_GRACE_MS } from "../common/constants.ts";
import { SIGNALS } from "../common/signals.ts";
import { fdPath } from "../linux/open-in-root.ts";
import type { Engine, RunContext, RunResult, ThreadKill } from "./engine.ts";
import { installKillSignals, KILL_LIB_NAME, killLibFile } from "./kill-signals.ts";
import { openModuleFile, readModulePathSync } from "./module-file.ts";
import { parseRunPlan, type RunPlan, runContextOf } from "./run-plan.ts";

export interface ExecutorOptions {
  /** The RunPlan's file (JSON, ./run-plan.ts). */
  plan: string;
  /** Where the engine's executor files are (Engine.executor().files). */
  engineDir?: string;
  engineOptions: Record<string, string>;
  /**
   * The module's compiled artifact: the one file of the node's compile cache the shim checked
   * (this node compiled it) and bound into the container. This process holds no key to check
   * it with and sees no cache (docs/ARCHITECTURE.md, "Compiled code we trust").
   */
  compiled?: string;
  killGraceMs?: number;
  stats?: boolean;
  /** Directory preopened as the module's "/" (default "/"; the shim passes the WASI view, src/oci/wasi-view.ts). */
  rootDir?: string;
}

/** Parse executor argv (without the runtime's own argv[0]/script; a leading "executor" is skipped). */
export function parseExecutorArgs(argv: string[]): ExecutorOptions {
  const a = argv[0] === "executor" ? argv.slice(1) : argv.slice();
  const o: Partial<ExecutorOptions> = { engineOptions: {} };
  let i = 0;
  const val = (flag: string): string => {
    const v = a[++i];
    if (v === undefined) throw new Error(`executor: ${flag} needs a value`);
    return v;
  };
  for (; i < a.length; i++) {
    const f = a[i] as string;
    switch (f) {
      case "--plan":
        o.plan = val(f);
        break;
      case "--engine-dir":
        o.engineDir = val(f);
        break;
      case "--engine-opt": {
        const kv = val(f);
        const eq = kv.indexOf("=");
        if (eq <= 0) throw new Error(`executor: --engine-opt wants KEY=VALUE, got ${kv}`);
        (o.engineOptions as Record<string, string>)[kv.slice(0, eq)] = kv.slice(eq + 1);
        break;
      }
      case "--compiled":
        o.compiled = val(f);
        break;
      case "--kill-grace-ms": {
        const n = Number(val(f));
        if (!Number.isSafeInteger(n) || n < 0) throw new Error(`executor: --kill-grace-ms wants milliseconds, got ${a[i]}`);
        o.killGraceMs = n;
        break;
      }
      case "--stats":
        o.stats = true;
        break;
      case "--root-dir":
        o.rootDir = val(f);
        break;
      default:
        throw new Error(`executor: unknown argument ${f}`);
    }
  }
  if (!o.plan) throw new Error("executor: --plan FILE is required");
  return o as ExecutorOptions;
}

/** The plan in `file`; synchronous, as every read here (see isService). */
function readPlan(file: string): RunPlan {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`executor: cannot read the plan ${file}: ${(e as Error).message}`);
  }
  return parseRunPlan(text);
}

const HANDLED = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"] as const;

/** The binary format's version field of a core module (a component's differs): `\0asm` 1 0 0 0. */
const CORE_MODULE_HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/** Whether the engine serves this module until stopped (Engine.isService); false when it cannot tell. */
async function isService(engine: Engine, module: string): Promise<boolean> {
  if (!engine.isService) return false;
  try {
    // Services are components: a core module (the common case) costs an 8-byte read here, not
    // a second read of the whole file that would sit in the heap until the first collection.
    // Synchronous reads: this process has nothing else to do meanwhile (docs/ARCHITECTURE.md, "Bun's thread pool").
    const head = new Uint8Array(8);
    const fd = openSync(module, "r");
    try {
      readSync(fd, head, 0, 8, 0);
    } finally {
      closeSync(fd);
    }
    if (CORE_MODULE_HEADER.every((b, i) => head[i] === b)) return false;
    return engine.isService(readModulePathSync(module));
  } catch {
    return false; // the run reports an unreadable module
  }
}

/** Run the module; resolves with the process exit code. Never throws. */
export async function runExecutor(argv: string[], engine: Engine): Promise<number> {
  const t0 = performance.now();
  let o: ExecutorOptions;
  let plan: RunPlan;
  try {
    o = parseExecutorArgs(argv);
    plan = readPlan(o.plan);
  } catch (e) {
    process.stderr.write(`bunwasi: ${(e as Error).message}\n`);
    return EXIT_ENGINE_ERROR;
  }
  // The module, opened once here inside the module's view (a symlink swapped in for it resolves
  // there, never to this process's /dev or /proc), and only if it is a regular file within the
  // cap (./module-file.ts): a swap since Create fails here, with what the file is now. The run
  // reads it through this fd.
  let moduleFd: number;
  try {
    moduleFd = openPlanModule(plan, o.rootDir ?? "/");
  } catch (e) {
    process.stderr.write(`bunwasi: ${(e as Error).message}\n`);
    return EXIT_ENGINE_ERROR;
  }
  const modulePath = fdPath(moduleFd);
  const killGraceMs = o.killGraceMs ?? KILL_GRACE_MS;
  // Handlers first, before the engine loads: the server holds a Kill until they are there
  // (src/runtime-v2/runc-instance.ts, src/linux/signal-ready.ts).
  let kill: ThreadKill | undefined;
  // A service (a wasi:http component) stops by draining its requests, which the C handlers'
  // exit KILL_GRACE_MS after a signal would cut short: its signals are handled in JavaScript.
  const service = await isService(engine, modulePath);
  if (process.env.BUNWASI_EXECUTOR_WORKER !== "1" && !service) {
    const lib = o.engineDir ? join(o.engineDir, KILL_LIB_NAME) : killLibFile()?.source;
    try {
      kill = lib
        ? installKillSignals(
            lib,
            HANDLED.map((n) => SIGNALS[n]),
            killGraceMs,
          )
        : undefined;
    } catch (e) {
      process.stderr.write(`bunwasi: ${(e as Error).message}; the module runs on a Worker\n`);
    }
  }
  const ac = new AbortController();
  // A second signal: what a user's second Ctrl-C (or an impatient `kill`) means to a server
  // that is draining, stop now (RunContext.stopNow).
  const now = new AbortController();
  const handlers: (readonly [(typeof HANDLED)[number], () => void])[] = [];
  const handleInJs = () => {
    for (const name of HANDLED) {
      const h = () => (ac.signal.aborted ? now.abort(SIGNALS[name]) : ac.abort(SIGNALS[name]));
      process.on(name, h);
      handlers.push([name, h]);
    }
    // A kill the C handlers took before JavaScript took over.
    const early = kill ? Atomics.load(kill.word, 0) : 0;
    if (early) ac.abort(early);
  };
  if (!kill) handleInJs();
  try {
    const runner = await engine.load({
      ...(o.engineDir ? { dir: o.engineDir } : {}),
      options: o.engineOptions,
      killGraceMs,
      // A service runs on this thread too (its server is the library's, ./wasmtime/http): no
      // Worker started ahead for it.
      ...(kill || service ? { thisThread: true } : {}),
    });
    const here = kill && runner.runHere ? kill : undefined;
    if (kill && !here) handleInJs();
    const ctx: Omit<RunContext, "signal"> = {
      // The module and the view as this process, inside the container, sees them.
      ...runContextOf(plan, { modulePath, rootDir: o.rootDir ?? "/" }),
      ...(o.compiled ? { compiled: o.compiled } : {}),
      ...handleRoom(plan.limits.openFiles),
      stdin: { kind: "inherit" },
      stdout: { kind: "inherit" },
      stderr: { kind: "inherit" },
      // This process is the container's: its network namespace is the pod's.
      httpServices: true,
    };
    const { code, stats }: RunResult =
      here && runner.runHere ? await runner.runHere(ctx, here) : await runner.run({ ...ctx, signal: ac.signal, stopNow: now.signal });
    if (o.stats) {
      const ru = process.resourceUsage();
      process.stderr.write(
        `bunwasi-executor: code=${code} wallMs=${(performance.now() - t0).toFixed(1)} maxRssKiB=${ru.maxRSS} engine=${engine.name} thread=${here ? "main" : "worker"} stats=${JSON.stringify(stats)}\n`,
      );
    }
    return code;
  } catch (e) {
    process.stderr.write(`bunwasi: ${(e as Error).message}\n`);
    return EXIT_ENGINE_ERROR;
  } finally {
    for (const [name, h] of handlers) process.off(name, h);
    closeSync(moduleFd);
  }
}

/**
 * Room enough for the engine's own descriptors (its runtime's epoll and event fds, the fd a
 * directory listing holds while it reads) besides the ones this process holds when the run
 * starts.
 */
const ENGINE_FDS = 32;

/**
 * The most WASI handles the module may hold: the kernel counts this process's own fds against
 * its RLIMIT_NOFILE too, and an open refused by the kernel reaches the module as an I/O error,
 * so the engine's cap (EMFILE, the errno a process at its limit gets) is what is left of the
 * limit runc set (`spec`, checked against /proc/self/limits) once this process's own fds and
 * the engine's margin are counted. Nothing when no limit is known.
 */
function handleRoom(spec: number | undefined): { maxOpenFiles?: number } {
  let limit = spec;
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (m?.[1] && m[1] !== "unlimited") limit = Math.min(limit ?? Number.POSITIVE_INFINITY, Number(m[1]));
  } catch {}
  if (limit === undefined) return {};
  let held = 0;
  try {
    held = readdirSync("/proc/self/fd").length;
  } catch {}
  // stdio and the preopens are among the module's handles and this process's fds alike.
  return { maxOpenFiles: Math.max(0, limit - held - ENGINE_FDS + 3) };
}

/**
 * The plan's module inside `root` (the module's view): an artifact's is in the run directory,
 * which the view does not hold, and is opened there (inside that directory, too).
 */
function openPlanModule(plan: RunPlan, root: string): number {
  const m = plan.module;
  const at = m.artifact ? { root: dirname(m.path), path: basename(m.path) } : { root, path: m.path };
  return openModuleFile(at.root, at.path, m.path).fd;
}

/** Process entry: `<shim binary> executor …`. */
export async function executorMain(argv: string[], engine: Engine): Promise<never> {
  const code = await runExecutor(argv, engine);
  process.exit(code);
}
