// The daemon's log: logfmt lines on stderr (journald or the operator's terminal), in the
// shape containerd's own Go code writes, so one parser reads both.

import { writeSync } from "node:fs";
import type { Logger } from "../task/task-host.ts";

/** `name`: the daemon binary's (each line carries it, as containerd's own lines carry theirs). */
export function stderrLogger(debug: boolean, name: string): Logger {
  return (msg, level = "info") => {
    if (level === "debug" && !debug) return;
    const line = `time="${new Date().toISOString()}" level=${level} msg=${JSON.stringify(msg)} daemon=${name} pid=${process.pid}\n`;
    try {
      writeSync(2, line);
    } catch {} // stderr gone (EPIPE): there is nowhere else to say it
  };
}
