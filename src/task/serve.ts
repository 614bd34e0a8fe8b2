// The long-running shim server: Task service (v2 and v3) on the socket `start` chose,
// events to containerd, exits watched through pidfds as the child subreaper.

import { prepare } from "../oci/bundle.ts";
import { mountRootfs, unmountRootfs } from "../oci/rootfs.ts";
import { Server } from "../ttrpc/index.ts";
import { socketPath } from "./address.ts";
import { Publisher } from "./events.ts";
import type { ShimFlags } from "./flags.ts";
import { TaskDefinition as TaskV2 } from "./gen/containerd/runtime/task/v2/shim.ts";
import { TaskDefinition as TaskV3 } from "./gen/containerd/runtime/task/v3/shim.ts";
import { openLog } from "./log.ts";
import { containerStateDir, runtimeRoot } from "./paths.ts";
import { becomeSubreaper, ExitWatcher } from "./reaper.ts";
import { findRuntime, Runc } from "./runc.ts";
import { createTaskService } from "./task-service.ts";

export async function serve(flags: ShimFlags): Promise<void> {
  const log = openLog(flags.bundle || process.cwd(), flags.debug);
  becomeSubreaper();
  const watcher = new ExitWatcher();
  const runc = new Runc({ binary: findRuntime(process.env.BUNWASI_RUNTIME), root: runtimeRoot(flags.namespace) });
  const events = new Publisher(process.env.TTRPC_ADDRESS || `${flags.address}.ttrpc`, flags.namespace, (m) => log(m, "warning"));
  const stateDir = containerStateDir(flags.namespace);
  const server = new Server({ onError: (e) => log(`ttrpc: ${String(e)}`, "error") });

  const exit = async () => {
    await Promise.race([events.flushed(), Bun.sleep(2000)]);
    await Promise.race([server.shutdown(), Bun.sleep(1000)]);
    process.exit(0);
  };

  const service = createTaskService({
    host: {
      runc,
      stateDir,
      watchExit: (pid) => watcher.watch(pid).then((r) => ({ status: r.status, at: r.exitedAt })),
      mountRootfs: async (bundle, mounts) => {
        mountRootfs(bundle, mounts);
        return () => unmountRootfs(bundle);
      },
      prepareBundle: async (id, bundle) => prepare({ id, bundle, stateDir }),
    },
    events,
    onShutdown: () => void exit(),
  });
  server.register(TaskV2, service).register(TaskV3, service);
  server.listen(socketPath(flags.socket));
  // containerd stops us with Shutdown; a signal from an operator means the same.
  process.on("SIGTERM", () => void exit());
  process.on("SIGINT", () => void exit());
  log(`serving ${flags.socket} for namespace ${flags.namespace}`);
}
