// The shim's log goes to the bundle's `log` fifo, which containerd reads and folds into
// its own log; in logfmt, as containerd's Go shims write it. The fifo is non-blocking, so a
// line written on the request path never waits: with containerd slow to read, it is lost
// rather than the call held up.

import { constants, openSync, writeSync } from "node:fs";
import { join } from "node:path";

export type Logger = (msg: string, level?: "debug" | "info" | "warning" | "error") => void;

export function openLog(bundle: string, debug: boolean): Logger {
  let fd = -1;
  try {
    // Non-blocking open: with no reader (no containerd), we log nowhere rather than hang.
    fd = openSync(join(bundle, "log"), constants.O_WRONLY | constants.O_NONBLOCK);
  } catch {} // ENXIO (no reader) or no fifo (not started by containerd): the log goes nowhere
  return (msg, level = "info") => {
    if (level === "debug" && !debug) return;
    const line = `time="${new Date().toISOString()}" level=${level} msg=${JSON.stringify(msg)} runtime=bunwasi pid=${process.pid}\n`;
    if (fd < 0) return;
    try {
      writeSync(fd, line);
    } catch {} // EAGAIN (fifo full) or EPIPE (containerd gone): there is no other place to say it
  };
}
