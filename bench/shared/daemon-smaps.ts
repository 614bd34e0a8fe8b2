// Where the shared-mode daemon's memory goes: PSS of containerd-wasmtimed, split by kind of
// mapping, with no container, with N idle wasm containers (the demo app's `daemon`, each in
// its own pod), and after all of them were deleted. Through a private containerd 1.6. Not a
// test: prints tables. Needs root, containerd and runc.
//
//   bun bench/shared/daemon-smaps.ts [--n 200] [--env K=V]… [--gdb-trim] [--cycles 0] [--native]
//
// --env passes variables to the daemon (MALLOC_ARENA_MAX=2, …), to test a hypothesis
// without a rebuild. --gdb-trim calls glibc's malloc_trim(0) in the daemon through gdb
// after the deletes, and measures again: how much of what is kept is free malloc memory.
// --cycles K first runs K create/start/delete cycles one at a time (not held at once).
//
// Anonymous mappings have no name, so they are grouped by what their shape says:
//   stack    a mapping that follows a one-page guard (---p) mapping: a thread's stack
//   arena    inside a 64 MiB-aligned glibc heap (the rw part of a non-main malloc arena)
//   [heap]   the main arena (brk)
//   big      other anonymous mappings of 1 MiB or more (JSC heaps, mimalloc segments,
//            wasm linear memories, wasmtime's code and tables)
//   small    other anonymous mappings under 1 MiB

import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { SHARED_RUNTIME, startDaemon } from "../../test/support/daemon.ts";
import { IMAGES, shimEnv } from "../../test/support/shim-env.ts";
import { type Mapping, parseSmaps } from "./smaps-diff.ts";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "200" },
    env: { type: "string", multiple: true, default: [] },
    "gdb-trim": { type: "boolean", default: false },
    cycles: { type: "string", default: "0" },
    parallel: { type: "string", default: "4" },
    // Native containers (busybox sleep, through runc) instead: what a sandbox costs the daemon
    // without a wasm run in it.
    native: { type: "boolean", default: false },
  },
});
const N = Number(values.n);
const CYCLES = Number(values.cycles);
const daemonEnv = Object.fromEntries(values.env.map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));

type Kind = "stack" | "arena" | "[heap]" | "big" | "small" | "file" | "other";
/** The daemon's mappings (smaps-diff.ts reads the same file format). */
function mappings(pid: number): Mapping[] {
  return parseSmaps(readFileSync(`/proc/${pid}/smaps`, "utf8"));
}

const ARENA = 64n << 20n;
function classifyEach(ms: Mapping[]): Kind[] {
  return ms.map((m, i) => {
    if (m.name === "[heap]") return "[heap]";
    if (m.name.startsWith("/")) return "file";
    if (m.name !== "") return "other";
    const prev = ms[i - 1];
    if (prev && prev.end === m.start && prev.perms.startsWith("---p") && prev.end - prev.start <= 64n << 10n && m.perms.startsWith("rw"))
      return "stack";
    // A non-main glibc arena: its heap starts 64 MiB-aligned, rw part then ---p reserve.
    if (m.start % ARENA === 0n && m.perms.startsWith("rw") && ms[i + 1]?.start === m.end && ms[i + 1]?.perms.startsWith("---p"))
      return "arena";
    if (m.end - m.start >= 1n << 20n) return "big";
    return "small";
  });
}

function classify(ms: Mapping[]): Map<Kind, { pss: number; count: number; vsz: number }> {
  const out = new Map<Kind, { pss: number; count: number; vsz: number }>();
  const kinds = classifyEach(ms);
  ms.forEach((m, i) => {
    const k = kinds[i] as Kind;
    const r = out.get(k) ?? { pss: 0, count: 0, vsz: 0 };
    r.pss += m.pss;
    r.count++;
    r.vsz += Number((m.end - m.start) >> 10n);
    out.set(k, r);
  });
  return out;
}

function rollup(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(`/proc/${pid}/smaps_rollup`, "utf8").split("\n")) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1] as string] = Number(m[2]);
  }
  return out;
}

const KINDS: Kind[] = ["stack", "arena", "[heap]", "big", "small", "file", "other"];
/** The big anonymous mappings grouped by size: how many of each and their PSS. */
function bigBySize(ms: Mapping[]): string {
  const by = new Map<number, { n: number; pss: number }>();
  const kinds = classifyEach(ms);
  ms.forEach((m, i) => {
    if (kinds[i] !== "big") return;
    const mib = Number((m.end - m.start) >> 10n) / 1024;
    const r = by.get(mib) ?? { n: 0, pss: 0 };
    r.n++;
    r.pss += m.pss;
    by.set(mib, r);
  });
  return [...by]
    .sort((a, b) => b[1].pss - a[1].pss)
    .slice(0, 8)
    .map(([mib, r]) => `${r.n}×${mib.toFixed(2)} MiB: ${(r.pss / 1024).toFixed(1)} MiB PSS`)
    .join("; ");
}

const snaps: {
  label: string;
  pss: number;
  anon: number;
  threads: number;
  fds: number;
  kinds: Map<Kind, { pss: number; count: number; vsz: number }>;
  big: string;
}[] = [];
function snap(label: string, pid: number) {
  const r = rollup(pid);
  const ms = mappings(pid);
  snaps.push({
    label,
    pss: (r.Pss ?? 0) / 1024,
    anon: (r.Pss_Anon ?? 0) / 1024,
    threads: readdirSync(`/proc/${pid}/task`).length,
    fds: readdirSync(`/proc/${pid}/fd`).length,
    kinds: classify(ms),
    big: bigBySize(ms),
  });
}

/** The daemon's open fds by kind (socket, pipe, anon_inode:[…], or a path with digits blanked). */
function fdKinds(pid: number): string {
  const by = new Map<string, number>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let t: string;
    try {
      t = readlinkSync(`/proc/${pid}/fd/${fd}`)
        .replace(/:\[\d+\]$/, "")
        .replace(/[0-9a-f]{8,}|\d+/g, "N");
    } catch {
      continue;
    }
    by.set(t, (by.get(t) ?? 0) + 1);
  }
  return [...by]
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${n}× ${k}`)
    .join(", ");
}

function gdbTrim(pid: number): string {
  const r = Bun.spawnSync(["gdb", "-p", String(pid), "-batch", "-ex", "call (int)malloc_trim(0)"], { stdout: "pipe", stderr: "pipe" });
  return /\$1 = (\d+)/.exec(r.stdout.toString())?.[1] ?? `gdb failed: ${r.stderr.toString().slice(-300)}`;
}

async function pool<T>(items: T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

const dir = mkdtempSync("/tmp/bwsm-");
const daemon = await startDaemon(join(dir, "d"), daemonEnv);
const env = await shimEnv({ env: daemon.env, dir: join(dir, basename(dir)) });
try {
  // One run first: the engine is loaded lazily and counts once whatever N is.
  const w = await env.run(IMAGES.demo, "warm", ["/wasi-demo-app.wasm", "echo", "x"], { runtime: SHARED_RUNTIME });
  if (w.code !== 0) throw new Error(`warm run: ${w.stderr}`);
  await Bun.sleep(2000);
  snap("N=0", daemon.pid);
  if (CYCLES > 0) {
    for (let i = 0; i < CYCLES; i++) {
      const r = await env.run(IMAGES.demo, `cyc${i}`, ["/wasi-demo-app.wasm", "echo", "x"], { runtime: SHARED_RUNTIME });
      if (r.code !== 0) throw new Error(`cycle ${i}: ${r.stderr}`);
    }
    await Bun.sleep(3000);
    snap(`after ${CYCLES} cycles`, daemon.pid);
  }
  const ids = Array.from({ length: N }, (_, i) => `idle${i}`);
  const t0 = performance.now();
  await pool(ids, Number(values.parallel), async (id) => {
    const what = values.native ? [IMAGES.busybox, id, "sleep", "3600"] : [IMAGES.demo, id, "/wasi-demo-app.wasm", "daemon"];
    const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, ...what]);
    if (r.code !== 0) throw new Error(`ctr run ${id}: ${r.stderr}`);
  });
  const createS = (performance.now() - t0) / 1000;
  await Bun.sleep(3000);
  snap(`N=${N}`, daemon.pid);
  const t1 = performance.now();
  await pool(ids, 8, async (id) => {
    await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
  });
  await Bun.sleep(1000);
  await pool(ids, 8, async (id) => {
    await env.cd.ctr(["task", "delete", "--force", id]);
    await env.cd.ctr(["container", "delete", id]);
  });
  const deleteS = (performance.now() - t1) / 1000;
  await Bun.sleep(3000);
  {
    const { client, manager } = await daemon.manager();
    const l = await manager.listSandboxes({});
    client.close();
    const left = (await env.cd.ctr(["container", "ls", "-q"])).stdout.split("\n").filter(Boolean);
    console.log(
      `after delete: ${l.sandboxes.length} sandboxes, ${l.wasmRunning} wasm runs in the daemon; containerd lists ${left.length} containers`,
    );
  }
  snap("deleted", daemon.pid);
  await Bun.sleep(5000);
  snap("deleted +5 s", daemon.pid);
  console.log(`fds after the deletes: ${fdKinds(daemon.pid)}`);
  if (values["gdb-trim"]) {
    const freed = gdbTrim(daemon.pid);
    await Bun.sleep(500);
    // gdb stopping every thread of a JSC process can kill it: then there is nothing to measure.
    if (daemon.proc.exitCode === null && daemon.proc.signalCode === null) snap(`malloc_trim (returned ${freed})`, daemon.pid);
    else console.log(`the daemon died under gdb (${daemon.proc.signalCode ?? daemon.proc.exitCode})`);
  }
  console.log(`daemon env: ${JSON.stringify(daemonEnv)}; create ${createS.toFixed(1)} s, delete ${deleteS.toFixed(1)} s\n`);
  console.log(`| when | PSS MiB | Pss_Anon | threads | fds | ${KINDS.map((k) => `${k} MiB (count)`).join(" | ")} |`);
  console.log(`|---|---:|---:|---:|---:|${KINDS.map(() => "---:").join("|")}|`);
  for (const s of snaps) {
    const cells = KINDS.map((k) => {
      const r = s.kinds.get(k);
      return r ? `${(r.pss / 1024).toFixed(1)} (${r.count})` : "0";
    });
    console.log(`| ${s.label} | ${s.pss.toFixed(1)} | ${s.anon.toFixed(1)} | ${s.threads} | ${s.fds} | ${cells.join(" | ")} |`);
  }
  console.log("\nbig anonymous mappings by size:");
  for (const s of snaps) console.log(`  ${s.label}: ${s.big}`);
  const at = snaps.find((s) => s.label === `N=${N}`);
  const zero = snaps[0];
  if (at && zero) {
    console.log(`\nper container at N=${N}: ${((at.pss - zero.pss) / N).toFixed(2)} MiB; by kind:`);
    for (const k of KINDS) {
      const d = ((at.kinds.get(k)?.pss ?? 0) - (zero.kinds.get(k)?.pss ?? 0)) / 1024 / N;
      console.log(`  ${k}: ${(d * 1024).toFixed(0)} KiB`);
    }
  }
} finally {
  const ns = env.cd.namespace;
  await env.stop();
  await daemon.stop("SIGKILL");
  for (const d of [runtimeRoot(ns), containerStateDir(ns)]) rmSync(d, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
}
