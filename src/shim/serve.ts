// The long-running shim server (normal mode: one per pod): the process's wiring around a
// Task service value. Everything with process-wide effect happens here and only here:
// the environment is read, the process becomes the child subreaper, cgroups are probed,
// signals are handled and the process exits. The service (src/task/task-service.ts) gets
// it all through a TaskHost (./normal-host.ts).

// Files are written and removed with synchronous calls throughout the server (src/task,
// src/oci, src/linux), microseconds each (docs/ARCHITECTURE.md, "Bun's thread pool").
import { renameSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { IDLE_SHRINK_MS } from "../common/constants.ts";
import { flushTraces, startTracing } from "../common/trace.ts";
import type { Engine } from "../engines/engine.ts";
import { ExitWatcher } from "../linux/exit-watcher.ts";
import { findRuntime } from "../linux/runc.ts";
import { becomeSubreaper } from "../linux/subreaper.ts";
import { ensureExecutorDir, pruneExecutorDirs } from "../oci/executor-dir.ts";
import { socketPath } from "../runtime-v2/address.ts";
import { type ShimFlags, ttrpcAddress } from "../runtime-v2/flags.ts";
import { shimPaths } from "../runtime-v2/paths.ts";
import { inheritedListenFd, TaskServer } from "../runtime-v2/task-server.ts";
import type { Logger } from "../task/task-host.ts";
import type { ServerInterceptor } from "../ttrpc/index.ts";
import { openLog } from "./log.ts";
import { normalModeHost, type ServedNamespace } from "./normal-host.ts";

/** `name`: the shim binary's name (its traces' service name; the file may be the one binary under another). */
export async function serve(flags: ShimFlags, engine: Engine, name: string): Promise<void> {
  const log = openLog(flags.bundle || process.cwd(), flags.debug);
  await writeShimPid(flags.bundle || process.cwd(), log);
  becomeSubreaper();
  const watcher = new ExitWatcher({ onSweepError: (e) => log(`reaping orphans: ${String(e)}`, "warning") });
  const paths = shimPaths(process.env);
  const namespaces = new Map<string, ServedNamespace>();
  const host = await normalModeHost({
    flags,
    paths,
    log,
    watcher,
    engine,
    runtimeBinary: findRuntime(process.env.BUNWASI_RUNTIME),
    ttrpcAddress: ttrpcAddress(flags, process.env),
    namespaces,
  });
  // Before the server exists: it adds a span per call only if tracing is on by then. Loads
  // nothing unless the OTEL_* variables ask for traces (src/common/trace.ts).
  await startTracing(process.env, name, log);
  const exit = () => {
    // The namespace's folders go with their last container (another server may still use them).
    for (const ns of namespaces.values()) for (const dir of ns.dirs) removeIfEmpty(dir, log);
    // The last calls' spans (Delete, Shutdown) go out first, within a second whatever the collector does.
    void flushTraces().finally(() => process.exit(0));
  };
  const server = new TaskServer({
    socket: socketPath(flags.socket),
    fd: inheritedListenFd(),
    service: { host, defaultNamespace: flags.namespace, shimPid: process.pid },
    log,
    // With -debug, every call is logged with how long it took: the timeline of a start.
    traceCalls: flags.debug,
    interceptors: [shrinkWhenIdle(IDLE_SHRINK_MS)],
    publishers: () => [...namespaces.values()].map((ns) => ns.publisher),
    onShutdown: exit,
    // Under the Sandbox API (a handler with sandboxer = "shim") this server is the pod.
    sandboxPid: process.pid,
  });
  log(`listening ${performance.now().toFixed(1)} ms after the process started`, "debug");
  // containerd stops us with Shutdown; a signal from an operator means the same.
  process.on("SIGTERM", () => void server.close().then(exit));
  process.on("SIGINT", () => void server.close().then(exit));
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
function removeIfEmpty(dir: string, log: Logger): void {
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
