// Where a warm `ctr run --rm` goes, process by process: every process containerd starts for it
// (shim start, the shim server, each runc call, the container's process, shim delete), when it
// started and how long it lived, in ms from the moment ctr was started, as medians over --runs
// runs. The times come from the kernel (./proc-events.ts, the proc connector), so no process is
// traced or slowed. With --log, the last run's containerd log and our server's debug lines
// (containerd at debug level passes -debug to the shim, whose server then logs each Task call
// with its duration) follow. Not a test: it prints tables, to see where a start goes. Root only.
//
//   bun bench/shim/timeline.ts [--runtime ours|runc|runwasi|shared] [--workload demo|small]
//                              [--runs 7] [--containerd v2.4.2] [--runwasi DIR] [--log]
//                              [--all (every log line)]
//
// --workload small (the default) is ./run.ts's small C module, run with --null-io (so is runc's
// busybox echo with it); demo is the demo app's echo.

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DAEMON, type Daemon, SHARED_RUNTIME, startDaemon } from "../../test/support/daemon.ts";
import { IMAGES, REPO, RUNTIME, shimEnv, WASM } from "../../test/support/shim-env.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { RUNC, RUNWASI, runwasiDir, runwasiPathDir } from "./peers.ts";
import type { ProcEvent } from "./proc-events.ts";

const { values } = parseArgs({
  options: {
    runtime: { type: "string", default: "ours" },
    workload: { type: "string", default: "small" },
    runs: { type: "string", default: "7" },
    runwasi: { type: "string" },
    containerd: { type: "string" },
    log: { type: "boolean", default: false },
    all: { type: "boolean", default: false },
  },
});
const RUNTIMES: Record<string, string> = { ours: RUNTIME, runc: RUNC, runwasi: RUNWASI, shared: SHARED_RUNTIME };
const runtime = RUNTIMES[values.runtime] ?? values.runtime;
const RUNS = Number(values.runs);
const SMALL_IMAGE = "docker.io/library/bunwasi-bench-small:latest";
const native = runtime.startsWith("io.containerd.runc.");
const [image, args] = native
  ? [IMAGES.busybox, ["echo", "hi"]]
  : values.workload === "demo"
    ? [IMAGES.demo, ["/wasi-demo-app.wasm", "echo", "hi"]]
    : [SMALL_IMAGE, ["/cat.wasm"]];
// The small workload's I/O is /dev/null (see SMALL_MODULE in ./run.ts), runc's too when compared with it.
const extra = values.workload === "small" ? ["--null-io"] : [];

const rw = runtime === RUNWASI ? runwasiDir(values.runwasi) : null;
if (runtime === RUNWASI && !rw) throw new Error("runwasi not found in ../shared/peers/runwasi");
const bin = values.containerd ? join(REPO, "build/containerd", values.containerd, "bin") : "";
let daemon: Daemon | null = null;
const daemonDir = runtime === SHARED_RUNTIME ? mkdtempSync("/tmp/bw-daemon-") : "";
if (daemonDir) {
  Bun.spawnSync(["bash", join(REPO, "scripts/build-shim.sh")]);
  daemon = await startDaemon(daemonDir);
  if (!DAEMON) throw new Error("no daemon");
}
const env = await shimEnv({
  ...(bin ? { binary: join(bin, "containerd") } : {}),
  path: [...(bin ? [bin] : []), ...(rw ? [runwasiPathDir(rw)] : [])],
  ...(daemon ? { env: daemon.env } : {}),
});
// Lines about other work containerd does meanwhile (image GC, snapshot bookkeeping).
const noise = /snapshot|garbage collect|event published|schedule/;

/** What a process is, from its argv: the rows of the table. */
function role(cmd: string): string {
  const words = cmd.split(" ");
  const exe = (words[0] ?? "").split("/").pop() ?? "";
  if (/containerd-shim-/.test(exe)) {
    const action = words.find((w) => w === "start" || w === "delete" || w === "serve");
    const kind = exe.replace(/^containerd-shim-/, "").replace(/-v\d+$/, "");
    return `${kind} shim ${action === "serve" || !action ? "server" : action}`;
  }
  if (words.includes("executor")) return "executor (container process)";
  if (exe === "runc") {
    if (words[1] === "init") return "runc init";
    const verb = words.find((w) => ["create", "start", "delete", "kill", "state", "events", "ps", "update"].includes(w));
    return `runc ${verb ?? words.slice(1).join(" ")}`;
  }
  if (exe === "ctr") return "ctr run --rm";
  if (exe === "" || exe === "?") return "(gone before its argv was read)";
  return `${exe} (container process)`;
}

interface Image {
  role: string;
  start: number;
  end: number;
}

/** The process images of one run: a pid's life from its exec to its next exec or its exit. */
function images(events: ProcEvent[], t0: bigint, t1: bigint, roots: Set<number>): Image[] {
  const ms = (t: string) => Number(BigInt(t) - t0) / 1e6;
  const ours = new Set(roots);
  const open = new Map<number, { role: string; start: number }>();
  const forked = new Map<number, { parent: number; start: number }>();
  const out: Image[] = [];
  const close = (pid: number, t: number) => {
    const o = open.get(pid);
    if (o) out.push({ ...o, end: t });
    open.delete(pid);
  };
  for (const e of events) {
    const t = BigInt(e.t);
    if (t < t0 - 5_000_000n || t > t1 + 50_000_000n) continue;
    if (e.ev === "fork") {
      if (!ours.has(e.ppid ?? 0)) continue;
      ours.add(e.pid);
      // A child that never execs (runwasi's container process, runc's nsexec stages) is the
      // parent's code running on: it shows as "fork of <parent>" if it lives to its exit.
      forked.set(e.pid, { parent: e.ppid ?? 0, start: ms(e.t) });
      const p = open.get(e.ppid ?? 0);
      if (p) open.set(e.pid, { role: `fork of ${p.role}`, start: ms(e.t) });
    } else if (e.ev === "exec") {
      // Descendants only: other containerds on the machine run shims and runc too.
      if (!ours.has(e.pid) && !ours.has(e.ppid ?? 0)) continue;
      ours.add(e.pid);
      // The fork's time before its exec is the parent's spawn, not a process of its own.
      if (forked.has(e.pid)) open.delete(e.pid);
      close(e.pid, ms(e.t));
      open.set(e.pid, { role: role(e.cmd ?? "?"), start: ms(e.t) });
    } else {
      close(e.pid, ms(e.t));
    }
  }
  for (const [, o] of open) out.push({ ...o, end: Number.NaN }); // still running (the shim server of a later run, a daemon)
  return out;
}

const median = (xs: number[]) => {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (!s.length) return Number.NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const watcher = Bun.spawn(["bun", join(import.meta.dir, "proc-events.ts")], { stdout: "pipe", stderr: "inherit" });
const events: ProcEvent[] = [];
const reading = (async () => {
  let rest = "";
  for await (const chunk of watcher.stdout as unknown as AsyncIterable<Uint8Array>) {
    rest += new TextDecoder().decode(chunk);
    const lines = rest.split("\n");
    rest = lines.pop() ?? "";
    for (const l of lines) if (l) events.push(JSON.parse(l) as ProcEvent);
  }
})();

/** The events so far that match, waiting up to 2 s for the first to arrive. */
async function eventsMatching(pred: (e: ProcEvent) => boolean): Promise<ProcEvent[]> {
  for (let i = 0; i < 200; i++) {
    const found = events.filter(pred);
    if (found.length) return found;
    await Bun.sleep(10);
  }
  throw new Error("the process events did not come (bench/shim/proc-events.ts needs root)");
}

/**
 * Wall-clock ns minus the events' clock (CLOCK_MONOTONIC; Bun's hrtime counts from its own
 * start): a process of ours is started between two wall-clock readings, and its exec event
 * falls between them. Within a millisecond on an idle machine.
 */
async function wallOffset(): Promise<bigint> {
  await Bun.sleep(200); // the watcher subscribes after its own start
  const w0 = performance.timeOrigin + performance.now();
  // Spawn returns once the child has exec'd. It must live on until the watcher reads its argv.
  const p = Bun.spawn(["/bin/sleep", "2"]);
  const w1 = performance.timeOrigin + performance.now();
  const [e] = await eventsMatching((e) => e.ev === "exec" && e.pid === p.pid);
  p.kill();
  return BigInt(Math.round(((w0 + w1) / 2) * 1e6)) - BigInt(e!.t);
}

try {
  const offset = await wallOffset();
  if (image === SMALL_IMAGE) {
    const archive = join(env.dir, "small.tar");
    writeImageArchive(archive, {
      name: SMALL_IMAGE,
      files: [{ path: "/cat.wasm", source: join(WASM, "cat.wasm") }],
      config: { entrypoint: ["/cat.wasm"] },
    });
    const imp = await env.cd.ctr(["images", "import", archive]);
    if (imp.code !== 0) throw new Error(`import: ${imp.stderr}`);
  }
  // One run first: the compile cache, the executor directory and the image snapshot exist after it.
  await env.run(image, "timeline-warmup", args, { runtime, extra });
  await Bun.sleep(300);
  const runs: { images: Image[]; total: number }[] = [];
  let seen = 0;
  let last = { t0: 0n, total: 0, images: [] as Image[] };
  for (let i = 0; i < RUNS; i++) {
    seen = readFileSync(env.cd.logPath, "utf8").length;
    const id = `timeline-${i}`;
    const r = await env.run(image, id, args, { runtime, extra });
    if (r.code !== 0) throw new Error(`ctr run failed (${r.code}): ${r.stderr}`);
    // Let the last exits arrive (a shim server exits after its Shutdown answer).
    await Bun.sleep(300);
    // ctr's own exec and exit are the run's start and end.
    const [ctr] = await eventsMatching((e) => e.ev === "exec" && / run /.test(e.cmd ?? "") && (e.cmd ?? "").includes(` ${id} `));
    const [end] = await eventsMatching((e) => e.ev === "exit" && e.pid === ctr!.pid && BigInt(e.t) > BigInt(ctr!.t));
    const t0 = BigInt(ctr!.t);
    const t1 = BigInt(end!.t);
    const total = Number(t1 - t0) / 1e6;
    runs.push({ images: images(events, t0, t1, new Set([process.pid, env.cd.pid, ...(daemon ? [daemon.pid] : [])])), total });
    last = { t0, total, images: runs[runs.length - 1]!.images };
  }
  console.log(
    `### ctr run --rm${extra.length ? ` ${extra.join(" ")}` : ""}, ${runtime} ${native ? "busybox echo" : values.workload === "demo" ? "demo app echo" : "C cat (17 KB)"}, containerd ${values.containerd ?? "1.6 (Debian)"}: median ${median(runs.map((r) => r.total)).toFixed(1)} ms of ${RUNS} warm runs\n`,
  );
  console.log("| process | runs seen | started (ms after ctr) | ended | lived ms |\n|---|---:|---:|---:|---:|");
  // One row per role and occurrence within a run (runc is called several times).
  const rows = new Map<string, { start: number[]; end: number[]; lived: number[] }>();
  for (const run of runs) {
    const k = new Map<string, number>();
    for (const im of [...run.images].sort((a, b) => a.start - b.start)) {
      const n = (k.get(im.role) ?? 0) + 1;
      k.set(im.role, n);
      const key = n > 1 ? `${im.role} (#${n})` : im.role;
      const row = rows.get(key) ?? { start: [], end: [], lived: [] };
      row.start.push(im.start);
      row.end.push(im.end);
      row.lived.push(im.end - im.start);
      rows.set(key, row);
    }
  }
  for (const [key, r] of [...rows].sort((a, b) => median(a[1].start) - median(b[1].start))) {
    if (/^fork of .*(runc|containerd)/.test(key)) continue; // Go's fork before exec, runc's nsexec stages: not a process of their own
    console.log(
      `| ${key} | ${r.start.length} | ${median(r.start).toFixed(1)} | ${median(r.end).toFixed(1)} | ${median(r.lived).toFixed(1)} |`,
    );
  }
  console.log(`| ctr exits | ${RUNS} | | ${median(runs.map((r) => r.total)).toFixed(1)} | |`);

  if (values.log) {
    console.log(`\n### the last run: processes and log (ms after ctr started; total ${last.total.toFixed(1)} ms)\n`);
    console.log("| ms | from | message |\n|---:|---|---|");
    const lines: [number, string][] = [];
    for (const im of last.images) {
      if (/^fork of .*(runc|containerd)/.test(im.role)) continue;
      lines.push([im.start, `| ${im.start.toFixed(1)} | kernel | ${im.role} starts |`]);
      if (!Number.isNaN(im.end))
        lines.push([im.end, `| ${im.end.toFixed(1)} | kernel | ${im.role} ends (lived ${(im.end - im.start).toFixed(1)} ms) |`]);
    }
    for (const line of readFileSync(env.cd.logPath, "utf8").slice(seen).split("\n")) {
      const m = /^time="([^"]+)" level=(\w+) msg="((?:[^"\\]|\\.)*)"(.*)$/.exec(line);
      if (!m) continue;
      // RFC 3339 with nanoseconds: Date.parse keeps the milliseconds, the rest is added back.
      const frac = /\.(\d+)/.exec(m[1] as string)?.[1] ?? "0";
      const wallNs = BigInt(Date.parse(m[1] as string)) * 1_000_000n + BigInt(`${frac}000000000`.slice(3, 9));
      const at = Number(wallNs - offset - last.t0) / 1e6;
      if (at > last.total + 50 || at < -5 || (!values.all && noise.test(m[3] as string))) continue;
      const from = /runtime=bunwasi pid=(\d+)/.test(m[4] as string) ? "shim server" : "containerd";
      const topic = /topic=(\S+)/.exec(m[4] as string)?.[1];
      const msg = `${m[3]}${topic ? ` ${topic}` : ""}`.replace(/\|/g, "\\|").slice(0, 140);
      lines.push([at, `| ${at.toFixed(1)} | ${from} | ${msg} |`]);
    }
    for (const [, l] of lines.sort((a, b) => a[0] - b[0])) console.log(l);
  }
} finally {
  watcher.kill();
  await reading.catch(() => {});
  await env.stop();
  await daemon?.stop("SIGTERM");
  if (daemonDir) rmSync(daemonDir, { recursive: true, force: true });
}
