// Memory of shared mode: PSS of containerd-wasmtimed with N idle wasm containers (each a
// module asleep in poll_oneoff), through a private containerd 1.6. Not a test: prints a
// table. Needs root, containerd and runc.
//
//   bun bench/shared/memory.ts [--metrics] [N…]      (default: 10 20 50)
//
// --metrics starts the daemon with --metrics-address (a unix socket beside it), and after the
// last step scrapes it once and measures again: what serving metrics costs.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { SHARED_RUNTIME, startDaemon } from "../../test/support/daemon.ts";
import { IMAGES, shimEnv } from "../../test/support/shim-env.ts";

const withMetrics = process.argv.includes("--metrics");
const steps = process.argv
  .slice(2)
  .filter((a) => a !== "--metrics")
  .map(Number)
  .filter((n) => n > 0);
if (steps.length === 0) steps.push(10, 20, 50);

/** Proportional set size of a process, in MiB (shared pages split among their users). */
const pss = (pid: number) => Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0) / 1024;

const dir = mkdtempSync("/tmp/bwb-");
const metricsSocket = join(dir, "metrics.sock");
const daemon = await startDaemon(join(dir, "d"), {}, withMetrics ? ["--metrics-address", `unix://${metricsSocket}`] : []);
const env = await shimEnv({ env: daemon.env, dir: join(dir, basename(dir)) });
try {
  // One run first: the engine is loaded lazily, and counts once whatever N is.
  await env.run(IMAGES.demo, "warm", ["/wasi-demo-app.wasm", "echo", "x"], { runtime: SHARED_RUNTIME });
  await Bun.sleep(1000);
  const base = pss(daemon.pid);
  console.log(`| containers | daemon PSS (MiB) | per added container (MiB) | PSS / N (MiB) |`);
  console.log(`| ---: | ---: | ---: | ---: |`);
  console.log(`| 0 | ${base.toFixed(1)} | | |`);
  let n = 0;
  for (const target of steps) {
    for (; n < target; n++) {
      const r = await env.cd.ctr([
        "run",
        "-d",
        "--runtime",
        SHARED_RUNTIME,
        IMAGES.demo,
        `idle${n}`,
        "/wasi-demo-app.wasm",
        "sleep",
        "3600",
      ]);
      if (r.code !== 0) throw new Error(`ctr run idle${n}: ${r.stderr}`);
    }
    await Bun.sleep(2000);
    const p = pss(daemon.pid);
    console.log(`| ${n} | ${p.toFixed(1)} | ${((p - base) / n).toFixed(2)} | ${(p / n).toFixed(2)} |`);
  }
  if (withMetrics) {
    const text = await (await fetch("http://localhost/metrics", { unix: metricsSocket })).text();
    await Bun.sleep(2000);
    const p = pss(daemon.pid);
    console.log(
      `| ${n}, after a scrape (${text.length} bytes) | ${p.toFixed(1)} | ${((p - base) / n).toFixed(2)} | ${(p / n).toFixed(2)} |`,
    );
  }
} finally {
  const ns = env.cd.namespace;
  await env.stop();
  await daemon.stop("SIGKILL");
  for (const d of [runtimeRoot(ns), containerStateDir(ns)]) rmSync(d, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
}
