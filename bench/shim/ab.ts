// A/B of two builds of the shim under one containerd: warm `ctr run --rm` of the demo's
// echo, and the PSS of N idle daemons, the two builds interleaved run by run so that the
// machine's load lands on both alike (on a busy machine only such a comparison means much).
// B is another build of this repository (e.g. an older commit's build/bin): containerd runs it
// by its absolute path (a runtime that is a path is the shim binary itself), through a link
// named as our shim, since the one binary picks its program by the name it is started as. Not a test.
//
//   bun bench/shim/ab.ts --b /path/to/other/containerd-shim-wasmtime-v1 [--runs 15] [--idle 20] [--cold]
//                        [--workload demo|small]
//
// --cold empties the compile cache before every run (of either build), as run.ts's cold row.
// --workload small runs run.ts's small C module (cat under --null-io) instead of the demo's echo.

import { mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { shimPaths } from "../../src/runtime-v2/paths.ts";
import { IMAGES, RUNTIME, shimEnv, WASM } from "../../test/support/shim-env.ts";
import { writeImageArchive } from "../../tools/image/index.ts";

const { values } = parseArgs({
  options: {
    b: { type: "string" },
    runs: { type: "string", default: "15" },
    idle: { type: "string", default: "20" },
    cold: { type: "boolean", default: false },
    workload: { type: "string", default: "demo" },
  },
});
if (!values.b) throw new Error("--b BINARY: the other build to compare with");
const RUNS = Number(values.runs);
const IDLE = Number(values.idle);
const pathDir = mkdtempSync("/tmp/bw-ab-");
const B_RUNTIME = join(pathDir, "containerd-shim-wasmtime-v1");
symlinkSync(values.b, B_RUNTIME);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
let seq = 0;

function pssKiB(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0; // gone
  }
}

const SMALL_IMAGE = "docker.io/library/bunwasi-bench-small:latest";
const small = values.workload === "small";
const [image, args, extra] = small
  ? [SMALL_IMAGE, ["/cat.wasm"], ["--null-io"]]
  : [IMAGES.demo as string, ["/wasi-demo-app.wasm", "echo", "hello"], [] as string[]];

const env = await shimEnv();
try {
  if (small) {
    const archive = join(env.dir, "small.tar");
    writeImageArchive(archive, { name: SMALL_IMAGE, files: [{ path: "/cat.wasm", source: join(WASM, "cat.wasm") }], config: {} });
    const imp = await env.cd.ctr(["images", "import", archive]);
    if (imp.code !== 0) throw new Error(`import: ${imp.stderr}`);
  }
  const label: Record<string, string> = { [RUNTIME]: "A (this build)", [B_RUNTIME]: `B (${values.b})` };
  const times: Record<string, number[]> = { [RUNTIME]: [], [B_RUNTIME]: [] };
  const hello = async (runtime: string) => {
    if (values.cold) rmSync(shimPaths().compileCacheDir, { recursive: true, force: true });
    const t0 = performance.now();
    const r = await env.run(image, `ab-${process.pid}-${seq++}`, args, { runtime, extra });
    if (r.code !== 0) throw new Error(`${runtime}: ${r.code} ${r.stderr}`);
    return performance.now() - t0;
  };
  for (const rt of [RUNTIME, B_RUNTIME]) await hello(rt); // compile cache and executor dirs
  for (let i = 0; i < RUNS; i++) {
    // Alternate which goes first, so neither always follows the other.
    const order = i % 2 ? [B_RUNTIME, RUNTIME] : [RUNTIME, B_RUNTIME];
    for (const rt of order) times[rt]?.push(await hello(rt));
  }
  const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  console.log(
    `### ${values.cold ? "cold (empty compile cache)" : "warm"} ctr run --rm of ${small ? "the small C module (cat, --null-io)" : "the demo's echo"}, median of ${RUNS} (load average after: ${load})\n`,
  );
  console.log("| build | median ms | ÷ B |\n|---|---:|---:|");
  const mb = median(times[B_RUNTIME] as number[]);
  for (const rt of [RUNTIME, B_RUNTIME]) {
    const m = median(times[rt] as number[]);
    console.log(`| ${label[rt]} | ${m.toFixed(1)} | ${(m / mb).toFixed(2)} |`);
  }

  if (IDLE > 0) console.log(`\n### ${IDLE} idle daemons each (PSS MiB, servers + executors)\n`);
  if (IDLE > 0) console.log("| build | total | per container |\n|---|---:|---:|");
  for (const rt of IDLE > 0 ? [RUNTIME, B_RUNTIME] : []) {
    const ids: string[] = [];
    for (let i = 0; i < IDLE; i++) {
      const id = `ab-idle-${process.pid}-${seq++}`;
      const r = await env.cd.ctr(["run", "-d", "--runtime", rt, IMAGES.demo, id, "/wasi-demo-app.wasm", "daemon"]);
      if (r.code !== 0) throw new Error(`run -d (${rt}): ${r.stderr}`);
      ids.push(id);
    }
    await Bun.sleep(3000);
    const pids: number[] = [];
    const ns = env.cd.namespace;
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const cmd = readFileSync(`/proc/${d}/cmdline`, "utf8").replaceAll("\0", " ");
        if (cmd.includes(`-namespace ${ns}`) && cmd.includes(" serve")) pids.push(Number(d));
      } catch {
        // gone
      }
    }
    for (const id of ids) {
      const ps = await env.cd.ctr(["task", "ps", id]);
      for (const line of ps.stdout.split("\n").slice(1)) {
        const pid = Number(line.trim().split(/\s+/)[0]);
        if (pid) pids.push(pid);
      }
    }
    const total = pids.reduce((a, p) => a + pssKiB(p), 0) / 1024;
    console.log(`| ${label[rt]} | ${total.toFixed(1)} | ${(total / IDLE).toFixed(2)} |`);
    for (const id of ids) await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
    await Bun.sleep(500);
    for (const id of ids) {
      await env.cd.ctr(["task", "delete", id]);
      await env.cd.ctr(["container", "delete", id]);
    }
  }
} finally {
  await env.stop();
  rmSync(pathDir, { recursive: true, force: true });
}
