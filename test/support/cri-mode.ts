// A CRI suite's containerd in one of our two modes, started and stopped in one call each:
// normal (handler wasmtime: a shim server per pod) or shared (handler wasmtimed, served by a
// daemon of the suite's own, whose directory goes with it).

import { mkdtempSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { type CriEnv, criEnv, SHARED_HANDLER } from "./cri.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "./daemon.ts";

export interface CriMode {
  cri: CriEnv;
  /** Shared mode's daemon; undefined in normal mode. */
  daemon: Daemon | undefined;
  /** Stops containerd, then the daemon: its exit code or signal (0 in normal mode). */
  stop(): Promise<number | string>;
}

export async function criInMode(o: { binary: string; shared: boolean; prefix: string; sandboxer?: "shim" }): Promise<CriMode> {
  const daemon = o.shared ? await startDaemon(mkdtempSync(o.prefix)) : undefined;
  const stopDaemon = async () => {
    if (!daemon) return 0;
    const code = await daemon.stop("SIGTERM");
    rmSync(dirname(daemon.socket), { recursive: true, force: true });
    return code;
  };
  let cri: CriEnv;
  try {
    cri = await criEnv({
      binary: o.binary,
      ...(daemon ? { handler: SHARED_HANDLER, runtime: SHARED_RUNTIME, env: daemon.env } : {}),
      ...(o.sandboxer ? { sandboxer: o.sandboxer } : {}),
    });
  } catch (e) {
    await stopDaemon();
    throw e;
  }
  return {
    cri,
    daemon,
    async stop() {
      await cri.stop();
      return stopDaemon();
    },
  };
}
