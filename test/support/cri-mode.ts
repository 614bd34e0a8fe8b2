// A CRI suite's containerd in one of our two modes, started and stopped in one call each:
// normal (handler wasmtime: a shim server per pod) or shared (handler wasmtimed, served by a
// daemon of the suite's own, whose directory goes with it); or by a describe block's hooks.

import { afterAll, beforeAll, expect } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
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

/**
 * The hooks of a describe block whose tests use one containerd in one mode: started before
 * them (a missing binary fails, never skips), handed to `use`, stopped after them with the
 * daemon's clean exit (0) expected.
 */
export function criModeHooks(o: Parameters<typeof criInMode>[0], timeoutMs: number, use: (m: CriMode) => void): void {
  let mode: CriMode | undefined;
  beforeAll(async () => {
    if (!existsSync(o.binary)) throw new Error(`${o.binary} is missing: run scripts/containerd-versions.sh`);
    mode = await criInMode(o);
    use(mode);
  }, timeoutMs);
  afterAll(async () => {
    if (mode) expect(await mode.stop()).toBe(0);
  }, timeoutMs);
}
