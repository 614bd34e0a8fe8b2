// The machine's processes as an e2e test looks at them: what is left after a teardown, which
// shim or pause belongs to whom, how much memory one holds. Read from /proc, whoever started them.

import { readdirSync, readFileSync } from "node:fs";

/** Running processes as pid → argv (kernel threads, whose cmdline is empty, are left out). */
export function processes(): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0");
      argv.pop();
      if (argv.length) out.set(Number(d), argv);
    } catch {}
  }
  return out;
}

/** A field of /proc/PID/status in bytes (VmRSS: resident now; VmHWM: the most resident so far). */
export function statusBytes(pid: number, field: "VmRSS" | "VmHWM"): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}
