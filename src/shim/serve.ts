// The long-running shim server: Task service (v2 and v3) on the socket `start` chose,
// events to containerd, exits watched through pidfds as the child subreaper.

import { rmdirSync } from "node:fs";
import { EVENTS_FLUSH_TIMEOUT_MS, SHUTDOWN_GRACE_MS } from "../common/constants.ts";
import type { Engine } from "../engines/engine.ts";
import { precompile } from "../engines/precompile.ts";
import { becomeSubreaper, ExitWatcher } from "../linux/reaper.ts";
import { findRuntime, Runc } from "../linux/runc.ts";
import { prepare } from "../oci/bundle.ts";
import { ensureExecutorDir, pruneExecutorDirs } from "../oci/executor-dir.ts";
import { mountRootfs, unmountRootfs } from "../oci/rootfs.ts";
import { Publisher } from "../task/events.ts";
import { TaskDefinition as TaskV2 } from "../task/gen/containerd/runtime/task/v2/shim.ts";
import { TaskDefinition as TaskV3 } from "../task/gen/containerd/runtime/task/v3/shim.ts";
import { createTaskService } from "../task/task-service.ts";
import { Server } from "../ttrpc/index.ts";
import { socketPath } from "./address.ts";
import type { ShimFlags } from "./flags.ts";
import { openLog } from "./log.ts";
import { COMPILE_CACHE_DIR, containerStateDir, DATA_ROOT, runtimeRoot } from "./paths.ts";

export async function serve(flags: ShimFlags, engine: Engine): Promise<void> {
  const log = openLog(flags.bundle || process.cwd(), flags.debug);
  becomeSubreaper();
  const watcher = new ExitWatcher();
  // Its poll thread starts now, while containerd is still on its way with Create.
  watcher.prestart();
  const runc = new Runc({ binary: findRuntime(process.env.BUNWASI_RUNTIME), root: runtimeRoot(flags.namespace) });
  const events = new Publisher(process.env.TTRPC_ADDRESS || `${flags.address}.ttrpc`, flags.namespace, (m) => log(m, "warning"));
  const stateDir = containerStateDir(flags.namespace);
  const server = new Server({ onError: (e) => log(`ttrpc: ${String(e)}`, "error") });

  const step = <T>(fn: () => T, what: string): T => {
    if (!flags.debug) return fn();
    const t0 = performance.now();
    const out = fn();
    const done = () => log(`${what} took ${(performance.now() - t0).toFixed(1)} ms`, "debug");
    // then(done, done), not finally(): a rejection stays the caller's to handle.
    if (out instanceof Promise) out.then(done, done);
    else done();
    return out;
  };

  const exit = async () => {
    // Stop accepting first: a `start` for this pod from now on starts a new server
    // instead of handing containerd one that is about to exit.
    const drained = server.shutdown(SHUTDOWN_GRACE_MS);
    await Promise.race([events.flushed(), Bun.sleep(EVENTS_FLUSH_TIMEOUT_MS)]);
    await drained;
    // The namespace's folders go with their last container (rmdir fails while another
    // shim of the namespace still has one there, which is what we want).
    for (const dir of [stateDir, runc.root]) {
      try {
        rmdirSync(dir);
      } catch {}
    }
    process.exit(0);
  };

  const service = createTaskService({
    host: {
      runc,
      stateDir,
      watchExit: (pid) => watcher.watch(pid).then((r) => ({ status: r.status, at: r.exitedAt })),
      mountRootfs: async (bundle, mounts) => {
        step(() => mountRootfs(bundle, mounts), "mount rootfs");
        return () => unmountRootfs(bundle);
      },
      prepareBundle: async (id, bundle) => {
        const prepared = await step(() => prepare({ id, bundle, stateDir, cacheDir: COMPILE_CACHE_DIR, engine }), "prepare bundle");
        const warm = () => step(() => precompile(engine, prepared, COMPILE_CACHE_DIR, (m) => log(m, "warning")), "precompile");
        return { runtimeBundle: prepared.runtimeBundle, kind: prepared.kind, warm };
      },
    },
    events,
    onShutdown: () => void exit(),
  });
  const traced = flags.debug ? timed(service, (m) => log(m, "debug")) : service;
  server.register(TaskV2, traced).register(TaskV3, traced);
  server.listen(socketPath(flags.socket));
  log(`listening ${performance.now().toFixed(1)} ms after the process started`, "debug");
  // containerd stops us with Shutdown; a signal from an operator means the same.
  process.on("SIGTERM", () => void exit());
  process.on("SIGINT", () => void exit());
  log(`serving ${flags.socket} for namespace ${flags.namespace}`);
  // Off the start path: clear executor directories of earlier installs.
  setTimeout(async () => {
    try {
      const removed = pruneExecutorDirs(DATA_ROOT, [(await ensureExecutorDir({ engine })).dir]);
      if (removed.length) log(`removed ${removed.length} executor directories of earlier installs`);
    } catch (e) {
      log(`pruning executor directories: ${String(e)}`, "warning");
    }
  }, 5000).unref();
}

/** With -debug, every call is logged with how long it took: the timeline of a start. */
function timed<T extends object>(service: T, log: (m: string) => void): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(service)) {
    if (typeof fn !== "function") continue;
    out[name] = async (req: { id?: string }, ctx: unknown) => {
      const t0 = performance.now();
      try {
        return await fn.call(service, req, ctx);
      } finally {
        log(`${name} ${req?.id ?? ""} took ${(performance.now() - t0).toFixed(1)} ms`);
      }
    };
  }
  return out as T;
}
