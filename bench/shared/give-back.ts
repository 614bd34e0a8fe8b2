// What the shared-mode daemon keeps after its containers are gone (issue 17 item 1: "the daemon
// back within 10% of its starting PSS after all are deleted"), round after round: R rounds of N
// idle wasm containers (the demo app's `sleep`, which the run pools take) created and started
// 8 at a time, killed, deleted. Through a private containerd 1.6. Not a test: prints a table,
// and keeps the daemon's smaps of every point for bench/shared/smaps-diff.ts. Needs root,
// containerd and runc.
//
//   bun bench/shared/give-back.ts [--n 1000] [--rounds 3] [--env K=V]… [--smaps DIR] [--no-wait] [--later S]
//
// --env MIMALLOC_SHOW_STATS=1: the daemon is stopped with SIGTERM and mimalloc's own figures
// (what it has committed, what is in use, abandoned pages), printed as it exits, follow the table.
//
// Points, each read once the daemon has logged a give-back pass with no sandbox, no wasm run
// and no run thread left (src/daemon/give-back.ts) and no shim of ours is alive (they map the
// daemon's binary, whose pages' PSS they would share):
//   fresh      the daemon started, nothing asked of it
//   one run    after one container (`echo`) and its pass: the density benchmark's "start"
//   round k    after the k-th round's deletes
// PSS counts a file page shared with other processes in part: libwasmtime.so is mapped by every
// process of any daemon or executor on the machine, so its share moves with what else runs.
// "Anon + file RSS" counts every page the daemon maps once, whatever else runs: the figure to
// compare on a machine others use.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { GAVE_BACK } from "../../src/daemon/give-back.ts";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { processesUsing } from "../../test/support/containerd.ts";
import { SHARED_RUNTIME, startDaemon } from "../../test/support/daemon.ts";
import { chunks, pool } from "../../test/support/ramp.ts";
import { IMAGES, shimEnv } from "../../test/support/shim-env.ts";
import { byKind, parseSmaps } from "./smaps-diff.ts";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "1000" },
    rounds: { type: "string", default: "3" },
    env: { type: "string", multiple: true, default: [] },
    smaps: { type: "string" },
    // Delete right after the kills (`task delete --force`), without waiting for every run to end
    // as the e2e test does.
    "no-wait": { type: "boolean", default: false },
    // Each round's point read again this many seconds later (what is still freed after the pass).
    later: { type: "string" },
  },
});
const N = Number(values.n);
const ROUNDS = Number(values.rounds);
const daemonEnv = Object.fromEntries(values.env.map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
const IDLE = ["/wasi-demo-app.wasm", "sleep", "36000000"];

async function until(what: string, f: () => boolean | Promise<boolean>, timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(100);
  }
}

const dir = mkdtempSync("/tmp/bwgb-");
const daemon = await startDaemon(join(dir, "d"), daemonEnv);
const env = await shimEnv({ env: daemon.env, dir: join(dir, basename(dir)) });
const passes = () =>
  daemon
    .log()
    .split("\n")
    .filter((l) => l.includes(GAVE_BACK) && l.includes(" 0 sandboxes, 0 wasm runs, 0 run threads")).length;
const shims = () => processesUsing(env.dir).filter((p) => p.pid !== env.cd.pid);

interface Point {
  label: string;
  pss: number;
  anon: number;
  fileRss: number;
  kinds: Map<string, { pss: number; n: number }>;
  pass: string;
  /** The daemon's CPU time so far (user + system), s: what a setting costs it, less swayed by the machine's load than a rate. */
  cpuS: number;
}
/** utime + stime of /proc/PID/stat, in seconds (USER_HZ is 100 on Linux). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}
const points: Point[] = [];
function rollup(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(`/proc/${daemon.pid}/smaps_rollup`, "utf8").split("\n")) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1] as string] = Number(m[2]);
  }
  return out;
}
function point(label: string): void {
  const text = readFileSync(`/proc/${daemon.pid}/smaps`, "utf8");
  if (values.smaps) {
    mkdirSync(values.smaps, { recursive: true });
    writeFileSync(join(values.smaps, `${label.replace(/ /g, "-")}.smaps`), text);
  }
  const r = rollup();
  const lastPass =
    daemon
      .log()
      .split("\n")
      .filter((l) => l.includes(GAVE_BACK))
      .at(-1) ?? "";
  points.push({
    label,
    pss: (r.Pss ?? 0) / 1024,
    anon: (r.Pss_Anon ?? 0) / 1024,
    fileRss: ((r.Rss ?? 0) - (r.Anonymous ?? 0)) / 1024,
    kinds: byKind(parseSmaps(text)),
    cpuS: cpuSeconds(daemon.pid),
    pass: /RSS [\d.]+ → [\d.]+ MiB( \(JS heap [\d.]+ of [\d.]+(, \d+ collections)?\))?/.exec(lastPass)?.[0] ?? "",
  });
  process.stderr.write(`${label}: PSS ${points.at(-1)!.pss.toFixed(1)} MiB\n`);
}
/** After `seen` passes with nothing left: the next such pass, and no shim alive. */
async function settled(seen: number, label: string): Promise<void> {
  await until("no shim left", () => shims().length === 0);
  await until("a give-back pass with nothing left", () => passes() > seen);
  point(label);
}

async function wasmRunning(): Promise<number> {
  const { client, manager } = await daemon.manager();
  try {
    return (await manager.listSandboxes({})).wasmRunning;
  } finally {
    client.close();
  }
}

async function round(ids: string[]): Promise<void> {
  await pool(ids, 8, async (id) => {
    const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.demo, id, ...IDLE], { timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`ctr run ${id}: ${r.stderr}`);
  });
  // One id per call: `ctr task kill` takes one container.
  await pool(ids, 8, async (id) => {
    await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
  });
  if (!values["no-wait"]) await until("every run to end", async () => (await wasmRunning()) === 0);
  await pool(chunks(ids, 25), 8, async (some) => {
    await env.cd.ctr(["task", "delete", ...(values["no-wait"] ? ["--force"] : []), ...some], { timeoutMs: 300_000 });
    await env.cd.ctr(["container", "delete", ...some], { timeoutMs: 300_000 });
  });
  await until("no container left", async () => (await env.cd.ctr(["container", "ls", "-q"])).stdout.trim() === "");
}

try {
  await until("no shim left", () => shims().length === 0);
  point("fresh");
  let seen = passes();
  const w = await env.run(IMAGES.demo, "warm", ["/wasi-demo-app.wasm", "echo", "x"], { runtime: SHARED_RUNTIME });
  if (w.code !== 0) throw new Error(`warm run: ${w.stderr}`);
  await settled(seen, "one run");
  for (let k = 1; k <= ROUNDS; k++) {
    seen = passes();
    const t0 = performance.now();
    await round(Array.from({ length: N }, (_, i) => `r${k}-${i}`));
    process.stderr.write(`round ${k}: ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
    await settled(seen, `round ${k}`);
    if (values.later) {
      await Bun.sleep(Number(values.later) * 1000);
      point(`round ${k} +${values.later} s`);
    }
  }
} finally {
  const base = points.find((p) => p.label === "one run");
  const pct = (x: number, b: number | undefined) => (b ? `${x >= b ? "+" : ""}${(((x - b) / b) * 100).toFixed(1)}%` : "");
  const kinds = ["reserve≥1G", "glibc arena", "code (anon x)", "stack", "file bunwasi", "file libwasmtime.so"];
  console.log(
    `\nN = ${N} per round, the demo app's sleep (pooled); env ${values.env.join(" ") || "(the daemon's own)"}; load ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}\n`,
  );
  console.log(
    `| point | PSS (MiB) | vs one run | Pss_Anon | anon + file RSS | vs one run | ${kinds.join(" | ")} | daemon CPU s | last pass |`,
  );
  console.log(`|---|---:|---:|---:|---:|---:|${kinds.map(() => "---:|").join("")}---:|---|`);
  for (const p of points) {
    const whole = p.anon + p.fileRss;
    console.log(
      `| ${p.label} | ${p.pss.toFixed(1)} | ${pct(p.pss, base?.pss)} | ${p.anon.toFixed(1)} | ${whole.toFixed(1)} | ${pct(whole, base ? base.anon + base.fileRss : undefined)} | ${kinds.map((k) => ((p.kinds.get(k)?.pss ?? 0) / 1024).toFixed(2)).join(" | ")} | ${p.cpuS.toFixed(1)} | ${p.pass} |`,
    );
  }
  await env.stop();
  // With MIMALLOC_SHOW_STATS=1 the allocator prints its figures as the daemon exits: a SIGTERM
  // (a clean exit), then what it printed.
  const stats = daemonEnv.MIMALLOC_SHOW_STATS === "1";
  const logged = daemon.log().length;
  await daemon.stop(stats ? "SIGTERM" : "SIGKILL");
  if (stats) console.log(`\nmimalloc at the daemon's exit:\n${daemon.log().slice(logged)}`);
  for (const d of [runtimeRoot(env.cd.namespace), containerStateDir(env.cd.namespace)]) rmSync(d, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
}
