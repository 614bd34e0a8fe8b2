// A container's cpuset (linux.resources.cpu.cpus and .mems) where no cgroup holds it: the
// shared-mode daemon runs every wasm container on its own threads, so what runc would write
// into the container's cpuset cgroup has to become the affinity of the threads that run it.
// Whatever runc denies a native container, the daemon may not grant a wasm one: a cpuset that
// leaves out a CPU the daemon may use confines the run's thread (sched_setaffinity), and one
// the daemon cannot honour is refused, never dropped. The decision is `cpusetPlacement`, the
// one place that makes it; the engine and the daemon's Instance only carry its answer.

import { readFileSync } from "node:fs";
import { schedGetaffinity, strerror } from "./libc.ts";

/** A cpuset the daemon cannot honour (bad syntax, no CPU it may use, memory nodes it cannot keep to). */
export class CpusetError extends Error {}

/** The largest CPU or memory node number a list may name (the kernel's largest NR_CPUS is 8192). */
const MAX_ID = 8191;

/**
 * A cpuset list as the kernel's cpuset files take it ("0-3,6", "1", ranges and single numbers
 * separated by commas; whitespace around them allowed), ascending without repeats. Throws
 * CpusetError on anything else: runc hands the string to the kernel, which refuses it.
 */
export function parseCpuList(list: string, what = "cpus"): number[] {
  const out = new Set<number>();
  for (const raw of list.split(",")) {
    const part = raw.trim();
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new CpusetError(`${what} "${list}" is not a list of numbers and ranges ("0-3,6")`);
    const lo = Number(m[1]);
    const hi = m[2] !== undefined ? Number(m[2]) : lo;
    if (hi < lo) throw new CpusetError(`${what} "${list}": range ${part} runs backwards`);
    if (hi > MAX_ID) throw new CpusetError(`${what} "${list}": ${hi} is above ${MAX_ID}`);
    for (let i = lo; i <= hi; i++) out.add(i);
  }
  return [...out].sort((a, b) => a - b);
}

/** `cpus` as a list ("0-2,5"), the form /proc shows (Cpus_allowed_list). */
export function formatCpuList(cpus: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === (cpus[j] as number) + 1) j++;
    parts.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

/** What the daemon itself may use: the CPUs and memory nodes a run could land on. */
export interface DaemonPlaces {
  cpus: readonly number[];
  mems: readonly number[];
}

/**
 * Where a run with this cpuset may go: `cpus` undefined when the cpuset covers every CPU the
 * daemon may use (the shared cpuset of kubelet's static CPU manager, or none: nothing changes,
 * the run may share a pool thread), else the CPUs its threads must be confined to (those of
 * the cpuset the daemon may use; runc too gets a cpuset cut to its parent's by the kernel).
 * Throws CpusetError for a cpuset naming no CPU the daemon may use (runc's write of it into
 * the cgroup fails: the container is not created), and for `mems` that leave out one of the
 * daemon's memory nodes: a thread's memory policy does not bind the allocations other
 * threads make for it (wasmtime's, the daemon's), so such a cpuset cannot be honoured here.
 * An empty string is unset, as runc treats it.
 */
export function cpusetPlacement(spec: { cpus?: string; mems?: string }, daemon: DaemonPlaces): { cpus?: number[] } {
  if (spec.mems !== undefined && spec.mems.trim() !== "") {
    const mems = new Set(parseCpuList(spec.mems, "mems"));
    const missing = daemon.mems.filter((n) => !mems.has(n));
    if (missing.length)
      throw new CpusetError(
        `mems "${spec.mems}" leaves out memory node${missing.length > 1 ? "s" : ""} ${formatCpuList(missing)}: in shared mode a wasm container's memory comes from the daemon's, on nodes ${formatCpuList(daemon.mems)}, and cannot be bound to fewer (use normal mode, io.containerd.wasmtime.v1)`,
      );
  }
  if (spec.cpus === undefined || spec.cpus.trim() === "") return {};
  const wanted = new Set(parseCpuList(spec.cpus, "cpus"));
  const cpus = daemon.cpus.filter((c) => wanted.has(c));
  if (cpus.length === 0)
    throw new CpusetError(`cpus "${spec.cpus}" names no CPU this node lets the daemon use (${formatCpuList(daemon.cpus)})`);
  return cpus.length === daemon.cpus.length ? {} : { cpus };
}

let daemonMems: number[] | undefined;

/**
 * The calling process's CPUs (its main thread's affinity, asked now: a cgroup may change it)
 * and memory nodes (Mems_allowed_list, read once). Call it from the thread whose affinity is
 * the daemon's own (the main thread).
 */
export function daemonPlaces(): DaemonPlaces {
  const [cpus, e] = schedGetaffinity(0);
  if (!cpus) throw new CpusetError(`sched_getaffinity: ${strerror(e)}`);
  if (!daemonMems) {
    const line = /^Mems_allowed_list:\s*(.*)$/m.exec(readFileSync("/proc/self/status", "utf8"));
    daemonMems = line?.[1] ? parseCpuList(line[1], "Mems_allowed_list") : [0];
  }
  return { cpus, mems: daemonMems };
}
