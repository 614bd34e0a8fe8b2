// The long-running shim server (normal mode: one per pod): the process's wiring around a
// Task service value. Everything with process-wide effect happens here and only here:
// the environment is read, the process becomes the child subreaper, cgroups are probed,
// signals are handled and the process exits. The service (src/task/task-service.ts) gets
// it all through a TaskHost (./normal-host.ts).

// Files are written and removed with synchronous calls throughout the server (src/task,
// src/oci, src/linux): each is small and takes microseconds, where asynchronous fs calls would
// start Bun's thread pool, whose threads then stay for the server's whole life (issue 8).
import { renameSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EVENTS_FLUSH_TIMEOUT_MS, IDLE_SHRINK_MS, SHUTDOWN_GRACE_MS } from "../common/constants.ts";
import type { Engine } from "../engines/engine.ts";
import { ExitWatcher } from "../linux/exit-watcher.ts";
import { findRuntime } from "../linux/runc.ts";
import { becomeSubreaper } from "../linux/subreaper.ts";
import { ensureExecutorDir, pruneExecutorDirs } from "../oci/executor-dir.ts";
import { socketPath } from "../runtime-v2/address.ts";
import { LISTEN_FD_ENV, type ShimFlags } from "../runtime-v2/flags.ts";
import { shimPaths } from "../runtime-v2/paths.ts";
import { TaskDefinition as TaskV2 } from "../task/gen/containerd/runtime/task/v2/shim.ts";
import type { Logger } from "../task/task-host.ts";
import { TaskService } from "../task/task-service.ts";
import { TaskV3 } from "../task/task-v3.ts";
import { requireSameUser, Server, type ServerInterceptor } from "../ttrpc/index.ts";
import { openLog } from "./log.ts";
import { normalModeHost, type ServedNamespace } from "./normal-host.ts";

export async function serve(flags: ShimFlags, engine: Engine): Promise<void> {
  const log = openLog(flags.bundle || process.cwd(), flags.debug);
  await writeShimPid(flags.bundle || process.cwd(), log);
  becomeSubreaper();
  const watcher = new ExitWatcher({ onSweepError: (e) => log(`reaping orphans: ${String(e)}`, "warning") });
  const paths = shimPaths(process.env);
  const listenFd = inheritedListenFd();
  const server = new Server({
    onError: (e) => log(`ttrpc: ${String(e)}`, "error"),
    // As containerd's own shims: only a peer of our uid and gid may drive us.
    handshaker: requireSameUser(),
    // With -debug, every call is logged with how long it took: the timeline of a start.
    interceptors: [shrinkWhenIdle(IDLE_SHRINK_MS), ...(flags.debug ? [callTimer((m) => log(m, "debug"))] : [])],
  });
  const namespaces = new Map<string, ServedNamespace>();
  const host = await normalModeHost({
    flags,
    paths,
    log,
    watcher,
    engine,
    runtimeBinary: findRuntime(process.env.BUNWASI_RUNTIME),
    ttrpcAddress: process.env.TTRPC_ADDRESS || `${flags.address}.ttrpc`,
    namespaces,
  });

  const exit = async () => {
    // Stop accepting first: a `start` for this pod from now on starts a new server
    // instead of handing containerd one that is about to exit.
    const drained = server.shutdown(SHUTDOWN_GRACE_MS);
    const flushed = Promise.all([...namespaces.values()].map((ns) => ns.publisher.flushed()));
    await Promise.race([flushed, Bun.sleep(EVENTS_FLUSH_TIMEOUT_MS)]);
    await drained;
    for (const ns of namespaces.values()) for (const dir of ns.dirs) await removeIfEmpty(dir, log);
    // A socket served from an inherited fd is not unlinked by the server: the file is ours.
    if (listenFd !== null) rmSync(socketPath(flags.socket), { force: true });
    process.exit(0);
  };

  const service = new TaskService({ host, defaultNamespace: flags.namespace, shimPid: process.pid, onShutdown: () => void exit() });
  server.register(TaskV2, service).register(TaskV3, service);
  server.listen(listenFd !== null ? { fd: listenFd } : socketPath(flags.socket));
  log(`listening ${performance.now().toFixed(1)} ms after the process started`, "debug");
  // containerd stops us with Shutdown; a signal from an operator means the same.
  process.on("SIGTERM", () => void exit());
  process.on("SIGINT", () => void exit());
  log(`serving ${flags.socket} for namespace ${flags.namespace}`);
  // Off the start path: clear executor directories of earlier installs. Cheap unless there
  // are some, and then done by one server of the node at a time (src/oci/executor-dir.ts).
  setTimeout(async () => {
    try {
      const removed = await pruneExecutorDirs(paths.dataRoot, [(await ensureExecutorDir({ engine })).dir]);
      if (removed.length) log(`removed ${removed.length} executor directories of earlier installs`);
    } catch (e) {
      log(`pruning executor directories: ${String(e)}`, "warning");
    }
  }, 5000).unref();
}

/**
 * `shim.pid` in the bundle that started this server, as runc-v2 leaves it: operators and
 * tools read the shim's pid there. Written whole (a temporary file renamed over it), so a
 * reader never sees half of it; a failure is logged, it is not worth failing the pod over.
 */
async function writeShimPid(bundle: string, log: Logger): Promise<void> {
  const tmp = join(bundle, `.shim.pid.${process.pid}`);
  try {
    writeFileSync(tmp, String(process.pid));
    renameSync(tmp, join(bundle, "shim.pid"));
  } catch (e) {
    log(`writing ${bundle}/shim.pid: ${String(e)}`, "warning");
    rmSync(tmp, { force: true });
  }
}

/** rmdir, where "not empty" (another shim of the namespace still has a container) is expected. */
async function removeIfEmpty(dir: string, log: Logger): Promise<void> {
  try {
    rmdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOTEMPTY" || code === "EEXIST" || code === "ENOENT") return;
    log(`removing ${dir}: ${String(e)}`, "warning");
  }
}

/**
 * A server interceptor that gives memory back once no call has come for `ms`: a full
 * collection, then Bun.shrink (JSC drops compiled code and returns free heap blocks). It
 * frees about 0.8 MiB of an idle server's 7.5 MiB anonymous memory, which a collection alone
 * does not. Deprecated in Bun's types, so called only where it exists.
 */
function shrinkWhenIdle(ms: number): ServerInterceptor {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const shrink = () => {
    Bun.gc(true);
    (Bun as { shrink?: () => void }).shrink?.();
  };
  return async (call, next) => {
    if (timer) clearTimeout(timer);
    try {
      return await next(call);
    } finally {
      // unref'd: an idle server lives on its socket, never on this timer.
      timer = setTimeout(shrink, ms);
      timer.unref();
    }
  };
}

/** A server interceptor that logs each call's method, container id and duration. */
function callTimer(log: (m: string) => void): ServerInterceptor {
  return async (call, next) => {
    const t0 = performance.now();
    try {
      return await next(call);
    } finally {
      const id = (call.request as { id?: string } | undefined)?.id ?? "";
      log(`${call.method} ${id} took ${(performance.now() - t0).toFixed(1)} ms`);
    }
  };
}

/** The listening socket `start` bound and passed as fd 3 (src/shim/start.ts), if it did. */
function inheritedListenFd(): number | null {
  const v = process.env[LISTEN_FD_ENV];
  // Not for the processes we start (runc, and through it containers).
  delete process.env[LISTEN_FD_ENV];
  if (v === undefined) return null;
  const fd = Number(v);
  if (!Number.isInteger(fd) || fd < 3) throw new Error(`${LISTEN_FD_ENV}=${v} is not a file descriptor`);
  return fd;
}
