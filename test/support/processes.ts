// The machine's processes as an e2e test looks at them: what is left after a teardown, which
// shim or pause belongs to whom. Read from /proc, whoever started them.

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
