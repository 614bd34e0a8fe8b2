// Pod start through CRI, as the kubelet drives it: RunPodSandbox, CreateContainer,
// StartContainer, then the container's first line in its CRI log file. Five rows on one
// containerd 2.x with its CRI plugin (test/support/cri.ts), interleaved:
//
//   runc                runc handler, a static native hello (./hello.c), a pause container
//   normal              handler wasmtime (a shim server per pod, the module under runc), pause container
//   shared podsandbox   handler wasmtimed (the daemon), pause container under runc
//   shared shim         handler wasmtimed-shim: the same daemon, `sandboxer = "shim"` (no pause)
//   normal shim         handler wasmtime-shim: normal mode with `sandboxer = "shim"` (no pause;
//                       the pod is its shim server)
//
// The wasm rows run the same C module, `wasi-demo-app.wasm echo hello` (the demo image, its
// compile cached after the warm-up pod). The calls go over containerd's gRPC socket
// (./cri-client.ts), not crictl, so no process start is counted. Not a test: prints a table
// of medians and p90s and each row's total against runc's.
//
//   bun bench/cri/pod-start.ts [--runs 15] [--containerd v2.4.2] [--pod-network]
//                              [--only runc,normal,shared,shim,normal-shim] [--timeline] [--logs DIR]
//                              [--gap 250 (ms of quiet after each teardown)]
//
// Pods use the host's network (NamespaceMode NODE) unless --pod-network: then each pod gets a
// network namespace of its own through a CNI bridge (what the shim sandboxer refuses today).
// Each pod is stopped and removed (StopPodSandbox, RemovePodSandbox) before the next starts;
// at the end nothing may be left: no pod, container or daemon sandbox, no process naming a pod.
// Between pods a quiet --gap: what a teardown leaves to do in the background (a shim's exit,
// containerd's garbage collection of the snapshot) lands in no row's next start.
// --timeline prints each sample's call times as they come, for looking at where time goes;
// --logs DIR keeps containerd's and the daemon's debug logs of the run there.

import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, watch, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { NamespaceMode } from "../../src/task/gen/k8s/cri/v1/pod_sandbox_config.ts";
import { pinned2x } from "../../test/support/containerd-versions.ts";
import { bridgeCni, CRI_IMAGES, type CriEnv, criEnv, HANDLER, K8S_NAMESPACE, SHARED_HANDLER } from "../../test/support/cri.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "../../test/support/daemon.ts";
import { processes } from "../../test/support/processes.ts";
import { REPO, RUNTIME } from "../../test/support/shim-env.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { type ContainerConfig, CriClient, type PodSandboxConfig } from "./cri-client.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "15" },
    containerd: { type: "string", default: pinned2x() },
    "pod-network": { type: "boolean", default: false },
    only: { type: "string", default: "runc,normal,shared,shim,normal-shim" },
    timeline: { type: "boolean", default: false },
    logs: { type: "string" },
    gap: { type: "string", default: "250" },
  },
});
const RUNS = Number(values.runs);
const GAP_MS = Number(values.gap);
const POD_NETWORK = values["pod-network"];
const CONTAINERD = join(REPO, "build/containerd", values.containerd, "bin/containerd");
if (!existsSync(CONTAINERD)) throw new Error(`${CONTAINERD} not built: bash scripts/containerd-versions.sh ${values.containerd}`);

/** The handlers whose pods go through containerd's Sandbox API: our runtimes with `sandboxer = "shim"`. */
const SHIM_SANDBOXER_HANDLER = `${SHARED_HANDLER}-shim`;
const NORMAL_SHIM_SANDBOXER_HANDLER = `${HANDLER}-shim`;
const HELLO_IMAGE = "docker.io/library/bunwasi-bench-hello:latest";

interface Row {
  key: string;
  label: string;
  handler: string;
  container: Omit<ContainerConfig, "name" | "logPath">;
}
const wasmHello = { image: CRI_IMAGES.demo, command: ["/wasi-demo-app.wasm"], args: ["echo", "hello"] };
const ALL_ROWS: Row[] = [
  { key: "runc", label: "runc, native hello", handler: "runc", container: { image: HELLO_IMAGE, command: ["/hello"], args: [] } },
  { key: "normal", label: "normal mode, podsandbox", handler: HANDLER, container: wasmHello },
  { key: "shared", label: "shared mode, podsandbox", handler: SHARED_HANDLER, container: wasmHello },
  { key: "shim", label: 'shared mode, sandboxer "shim"', handler: SHIM_SANDBOXER_HANDLER, container: wasmHello },
  { key: "normal-shim", label: 'normal mode, sandboxer "shim"', handler: NORMAL_SHIM_SANDBOXER_HANDLER, container: wasmHello },
];
const only = new Set(values.only.split(","));
const ROWS = ALL_ROWS.filter((r) => only.has(r.key));
if (!ROWS.length) throw new Error(`--only ${values.only}: no row (runc, normal, shared, shim, normal-shim)`);

/** One pod's times in ms from sending RunPodSandbox. */
interface Sample {
  run: number;
  create: number;
  start: number;
  /** From StartContainer's answer to the first log line; 0 when the line came first. */
  output: number;
  /** Until StartContainer has answered and the first line is in the log. */
  total: number;
  /** StopPodSandbox + RemovePodSandbox (not part of the start). */
  teardown: number;
}

function buildHello(dir: string): string {
  const out = join(dir, "hello");
  const r = Bun.spawnSync(["clang", "-static", "-Os", "-s", "-o", out, join(import.meta.dir, "hello.c")], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`clang hello.c: ${r.stderr.toString()}`);
  return out;
}

async function importHello(cri: CriEnv): Promise<void> {
  const archive = join(cri.dir, "hello.tar");
  writeImageArchive(archive, {
    name: HELLO_IMAGE,
    files: [{ path: "/hello", source: buildHello(cri.dir), mode: 0o755 }],
    config: { entrypoint: ["/hello"] },
  });
  const r = await cri.cd.ctr(["images", "import", archive], { namespace: K8S_NAMESPACE });
  if (r.code !== 0) throw new Error(`ctr images import hello.tar: ${r.stderr}`);
  // The CRI plugin learns of an imported image from containerd's events.
  const deadline = Date.now() + 20_000;
  while (!(await cri.crictlOk(["images", "-o", "json"])).includes(HELLO_IMAGE)) {
    if (Date.now() > deadline) throw new Error("the CRI plugin does not list the hello image");
    await Bun.sleep(100);
  }
}

/**
 * Resolves with performance.now() when `file` first holds a whole line (a CRI log line:
 * `<time> stdout F hello`). inotify on its directory, and a slow poll in case an event is
 * missed. `cancel` stops watching.
 */
function firstLine(file: string): { at: Promise<number>; cancel(): void } {
  let done = false;
  let resolve!: (t: number) => void;
  const at = new Promise<number>((r) => {
    resolve = r;
  });
  const check = () => {
    if (done) return;
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      return;
    }
    if (!text.includes("\n")) return;
    const t = performance.now();
    stop();
    resolve(t);
  };
  const watcher = watch(join(file, ".."), check);
  const poll = setInterval(check, 50);
  const stop = () => {
    done = true;
    watcher.close();
    clearInterval(poll);
  };
  return { at, cancel: stop };
}

/** Until CRI reports container `id` EXITED (state 2). */
async function exited(client: CriClient, id: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const c = (await client.listContainers()).find((x) => x.id === id);
    if (c?.state === 2) return;
    if (Date.now() > deadline) throw new Error(`container ${id}: state ${c?.state} after 30 s, wanted EXITED`);
    await Bun.sleep(20);
  }
}

let seq = 0;
/** Every pod this run made, for the check that none is left. */
const podIds: string[] = [];
async function podStart(cri: CriEnv, client: CriClient, row: Row, cgroupRoot: string): Promise<Sample> {
  const name = `${row.key}-${seq++}`;
  const logDir = join(cri.dir, "pods", name);
  mkdirSync(logDir, { recursive: true });
  const network = POD_NETWORK ? NamespaceMode.POD : NamespaceMode.NODE;
  const config: PodSandboxConfig = {
    metadata: { name, uid: `${name}-${process.pid}`, namespace: "bunwasi-bench", attempt: 0 },
    hostname: "",
    logDirectory: logDir,
    dnsConfig: undefined,
    labels: {},
    annotations: {},
    linux: {
      cgroupParent: `/${cgroupRoot}/${name}`,
      sysctls: {},
      securityContext: { namespaceOptions: { network, pid: NamespaceMode.POD, ipc: NamespaceMode.POD } },
    },
  };
  const logPath = "hello.log";
  const line = firstLine(join(logDir, logPath));
  let podId = "";
  try {
    const t0 = performance.now();
    podId = await client.runPodSandbox(config, row.handler);
    podIds.push(podId);
    const t1 = performance.now();
    const ctrId = await client.createContainer(podId, { name: "hello", logPath, ...row.container }, config);
    const t2 = performance.now();
    await client.startContainer(ctrId);
    const t3 = performance.now();
    const timeout = setTimeout(() => line.cancel(), 30_000);
    const t4 = await Promise.race([line.at, Bun.sleep(30_000).then(() => Number.NaN)]);
    clearTimeout(timeout);
    if (Number.isNaN(t4)) throw new Error(`${row.label}: no output in ${join(logDir, logPath)} within 30 s`);
    const text = readFileSync(join(logDir, logPath), "utf8");
    if (!/ stdout F hello\n/.test(text)) throw new Error(`${row.label}: the log is not the hello line: ${JSON.stringify(text)}`);
    // The hello has ended; StopPodSandbox while containerd has not yet seen its exit may fail
    // to kill it ("container not running"), so the teardown waits for EXITED first (untimed).
    await exited(client, ctrId);
    const t5 = performance.now();
    await client.stopPodSandbox(podId);
    await client.removePodSandbox(podId);
    const t6 = performance.now();
    podId = "";
    await Bun.sleep(GAP_MS);
    return { run: t1 - t0, create: t2 - t1, start: t3 - t2, output: Math.max(0, t4 - t3), total: Math.max(t3, t4) - t0, teardown: t6 - t5 };
  } finally {
    line.cancel();
    if (podId) {
      await client.stopPodSandbox(podId).catch(() => {});
      await client.removePodSandbox(podId).catch(() => {});
    }
  }
}

const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const median = (xs: number[]) => {
  const s = sorted(xs);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
/** Nearest-rank p90. */
const p90 = (xs: number[]) => sorted(xs)[Math.ceil(0.9 * xs.length) - 1]!;
const ms = (x: number) => x.toFixed(1);

/** What a finished run must not leave: pods, containers, daemon sandboxes, processes naming a pod. */
async function leftovers(client: CriClient, daemon: Daemon, podIds: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of await client.listPodSandbox()) out.push(`pod ${p.id} (${p.runtimeHandler}, state ${p.state})`);
  for (const c of await client.listContainers()) out.push(`container ${c.id} of pod ${c.podSandboxId}`);
  const { client: m, manager } = await daemon.manager();
  try {
    for (const s of (await manager.listSandboxes({})).sandboxes) out.push(`daemon sandbox ${s.namespace}/${s.id}`);
  } finally {
    m.close();
  }
  for (const argv of processes().values()) {
    const cmd = argv.join(" ");
    if (podIds.some((id) => cmd.includes(id))) out.push(`process: ${cmd}`);
  }
  return out;
}

const daemonDir = mkdtempSync("/tmp/bwps-");
const daemon = await startDaemon(daemonDir);
const bridge = `bwps${(process.pid & 0xffff).toString(16)}`;
let cri: CriEnv | undefined;
let client: CriClient | undefined;
try {
  cri = await criEnv({
    binary: CONTAINERD,
    handler: SHIM_SANDBOXER_HANDLER,
    runtime: SHARED_RUNTIME,
    sandboxer: "shim",
    extraHandlers: [
      { handler: HANDLER, runtime: RUNTIME },
      { handler: SHARED_HANDLER, runtime: SHARED_RUNTIME },
      { handler: NORMAL_SHIM_SANDBOXER_HANDLER, runtime: RUNTIME, sandboxer: "shim" },
    ],
    env: daemon.env,
    ...(POD_NETWORK
      ? {
          cni: bridgeCni(bridge, `10.249.${process.pid % 250}.0/24`),
        }
      : {}),
  });
  await importHello(cri);
  client = new CriClient(cri.cd.address);
  const cgroupRoot = `bunwasi-cri-${basename(cri.dir)}`;
  console.log(
    `containerd ${values.containerd}, ${RUNS} interleaved pods per row after one warm-up each, ${POD_NETWORK ? "pods with a network namespace of their own (CNI bridge)" : "host-network pods"}; load ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`,
  );

  // One of each first: image snapshots, the compile cache, the daemon's first sandbox.
  for (const row of ROWS) await podStart(cri, client, row, cgroupRoot);
  const samples = new Map<string, Sample[]>(ROWS.map((r) => [r.key, []]));
  for (let i = 0; i < RUNS; i++) {
    // Rotated each round, so no row is always the one after another.
    for (let j = 0; j < ROWS.length; j++) {
      const row = ROWS[(i + j) % ROWS.length]!;
      const s = await podStart(cri, client, row, cgroupRoot);
      samples.get(row.key)!.push(s);
      if (values.timeline)
        console.log(
          `${row.key.padEnd(11)} run ${ms(s.run)}  create ${ms(s.create)}  start ${ms(s.start)}  output +${ms(s.output)}  total ${ms(s.total)}  teardown ${ms(s.teardown)}`,
        );
    }
  }

  const left = await leftovers(client, daemon, podIds);
  const cols: [keyof Sample, string][] = [
    ["run", "RunPodSandbox"],
    ["create", "CreateContainer"],
    ["start", "StartContainer"],
    ["output", "first output"],
    ["total", "total"],
  ];
  const runcTotal = samples.get("runc")?.length ? median(samples.get("runc")!.map((s) => s.total)) : Number.NaN;
  console.log(
    `\nms, median / p90 of ${RUNS}; first output: from StartContainer's answer to the first line in the CRI log (0 if before); total: until both\n`,
  );
  console.log(`| | ${cols.map(([, t]) => t).join(" | ")} | ÷ runc | teardown |`);
  console.log(`|---|${cols.map(() => "---:").join("|")}|---:|---:|`);
  for (const row of ROWS) {
    const xs = samples.get(row.key)!;
    const cell = (k: keyof Sample) => `${ms(median(xs.map((s) => s[k])))} / ${ms(p90(xs.map((s) => s[k])))}`;
    const ratio = median(xs.map((s) => s.total)) / runcTotal;
    console.log(
      `| ${row.label} | ${cols.map(([k]) => cell(k)).join(" | ")} | ${Number.isNaN(ratio) ? "" : ratio.toFixed(2)} | ${cell("teardown")} |`,
    );
  }
  console.log(`\nleft at the end: ${left.length ? left.join("; ") : "nothing (no pod, container, daemon sandbox or process of a pod)"}`);
  if (left.length) process.exitCode = 1;
} finally {
  client?.close();
  if (values.logs) {
    mkdirSync(values.logs, { recursive: true });
    if (cri) copyFileSync(cri.cd.logPath, join(values.logs, "containerd.log"));
    writeFileSync(join(values.logs, "daemon.log"), daemon.log());
  }
  await cri?.stop();
  await daemon.stop("SIGTERM");
  if (POD_NETWORK) Bun.spawnSync(["ip", "link", "del", bridge], { stderr: "ignore" });
  rmSync(daemonDir, { recursive: true, force: true });
}
