// Before a catchable signal is sent to a freshly started process that is PID 1 of its pid
// namespace (the kernel drops it unless a handler is installed): wait until it catches it.
// Read from /proc a few ms apart, sleeping on the event loop in between, so a slow start of
// one container never holds up the calls of others. The reads themselves are synchronous,
// microseconds each (docs/ARCHITECTURE.md, "Bun's thread pool").

import { readFileSync, readlinkSync } from "node:fs";
import { SIGNAL_READY_TIMEOUT_MS } from "../common/constants.ts";

/**
 * Resolves once `pid` has exec'd the container's process (its exe is no longer the runtime's
 * init, `initExe`) and that process catches `signal` (its bit in /proc/<pid>/status SigCgt);
 * or once it is gone, or `done()`, or after `timeoutMs` (then the caller sends anyway).
 */
export async function untilSignalHandled(
  pid: number,
  initExe: string,
  signal: number,
  done: () => boolean,
  timeoutMs = SIGNAL_READY_TIMEOUT_MS,
): Promise<void> {
  const bit = 1n << BigInt(signal - 1);
  const deadline = Date.now() + timeoutMs;
  while (!done() && Date.now() < deadline) {
    let caught: bigint;
    try {
      const exe = readlinkSync(`/proc/${pid}/exe`);
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      const m = /^SigCgt:\s*([0-9a-fA-F]+)/m.exec(status);
      if (!m) return;
      caught = exe === initExe ? 0n : BigInt(`0x${m[1]}`);
    } catch {
      return; // gone
    }
    if ((caught & bit) !== 0n) return;
    await Bun.sleep(5);
  }
}
