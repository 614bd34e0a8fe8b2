// The peers the shim benchmark measures beside us, in the same run: runc (native work, the
// floor) and runwasi (the unmodified binaries in ../shared/peers/runwasi, see its README),
// plus runwasi's own stress test, which drives any shim through containerd.

import { existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { join, resolve } from "node:path";
import type { ShimEnv } from "../../test/support/shim-env.ts";
import { REPO, WASM } from "../../test/support/shim-env.ts";
import { writeImageArchive } from "../../tools/image/index.ts";

export const RUNC = "io.containerd.runc.v2";
/** runwasi's shim is linked under this name so that containerd tells it from ours. */
export const RUNWASI = "io.containerd.runwasi.v1";

/** Where runwasi's binaries are: --runwasi DIR, else ../shared/peers/runwasi beside the repo. */
export function runwasiDir(flag?: string): string | null {
  const dir = resolve(flag ?? join(REPO, "../shared/peers/runwasi"));
  return existsSync(join(dir, "containerd-shim-wasmtime-v1")) ? dir : null;
}

/** A directory to put on containerd's PATH that holds runwasi's shim as containerd-shim-runwasi-v1. */
export function runwasiPathDir(dir: string): string {
  const bin = mkdtempSync("/tmp/bw-runwasi-");
  symlinkSync(join(dir, "containerd-shim-wasmtime-v1"), join(bin, "containerd-shim-runwasi-v1"));
  // It outlives every containerd of the run (they exec the shim from it): gone with the bench.
  process.once("exit", () => rmSync(bin, { recursive: true, force: true }));
  return bin;
}

/** The image name runwasi's stress test runs by default, and its default arguments. */
export const STRESS_IMAGE = "ghcr.io/containerd/runwasi/wasi-demo-app:latest";

/**
 * runwasi's stress test with -c talks to /run/containerd/containerd.sock in namespace
 * "default" and links the shim it is given into /usr/local/bin. We point that path at our
 * private containerd for the run (refusing if a real one is there) and import the demo
 * image into "default" under the name it expects.
 */
export async function withStressSocket<T>(env: ShimEnv, fn: () => Promise<T>): Promise<T> {
  const sock = "/run/containerd/containerd.sock";
  let ours = false;
  try {
    const st = lstatSync(sock);
    if (!st.isSymbolicLink()) throw new Error(`${sock} exists (a system containerd?): the stress test needs it for our private containerd`);
    rmSync(sock);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  mkdirSync("/run/containerd", { recursive: true });
  symlinkSync(env.cd.address, sock);
  ours = true;
  try {
    const archive = join(env.dir, "stress-image.tar");
    writeImageArchive(archive, {
      name: STRESS_IMAGE,
      files: [{ path: "/wasi-demo-app.wasm", source: join(WASM, "wasi-demo-app.wasm") }],
      config: { entrypoint: ["/wasi-demo-app.wasm"] },
    });
    const r = await env.cd.ctr(["images", "import", archive], { namespace: "default" });
    if (r.code !== 0) throw new Error(`import into default: ${r.stderr}`);
    return await fn();
  } finally {
    if (ours) rmSync(sock, { force: true });
  }
}

export interface StressResult {
  seconds: number;
  tasksPerSecond: number;
  output: string;
  /** stress-test's own --json-output. */
  report: string;
  /** Tasks that failed (stress-test then exits 1 and writes no figure: tasksPerSecond is succeeded ÷ wall clock). */
  failed: number;
}

/** One stress-test run: N tasks of create/start/wait/delete, P at a time, of `shim`. */
export async function stress(runwasi: string, shim: string, n: number, parallel: number, extra: string[] = []): Promise<StressResult> {
  const t0 = performance.now();
  const json = join(mkdtempSync("/tmp/bw-stress-"), "out.json");
  const p = Bun.spawn(
    [join(runwasi, "stress-test"), "-c", "-p", String(parallel), "-n", String(n), "-t", "60s", "--json-output", json, ...extra, shim],
    {
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  // A shim that never answers would keep stress-test (and the benchmark) waiting forever.
  let timedOut = false;
  const timer = setTimeout(
    () => {
      timedOut = true;
      p.kill("SIGKILL");
    },
    Math.max(120_000, n * 200),
  );
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  const seconds = (performance.now() - t0) / 1000;
  if (timedOut) throw new Error(`stress-test ${shim} did not finish in ${seconds.toFixed(0)} s: ${`${out}${err}`.slice(-600)}`);
  // Its progress lines ([OK] per task) would bury the failures: keep every other line.
  const notOk = `${out}${err}`
    .replaceAll("\r", "\n")
    .split("\n")
    .filter((l) => l.trim() && !/\[OK\]|Press Ctrl-C/.test(l))
    .join("\n");
  // A few failed tasks are a result (runwasi's youki races now and then), not a crash.
  const tally = /(\d+) tasks succeeded, (\d+) tasks failed, (\d+) tasks didn't finish/.exec(notOk);
  if (code !== 0 && !(tally && Number(tally[1]) > 0)) throw new Error(`stress-test ${shim} exited ${code}: ${notOk.slice(-3000)}`);
  const failed = tally ? Number(tally[2]) + Number(tally[3]) : 0;
  if (failed) console.error(`stress-test ${shim}: ${failed} of ${n} tasks failed:\n${notOk.slice(-3000)}`);
  const report = existsSync(json) ? await Bun.file(json).text() : "";
  // stress-test's own figure (its clock starts after its set-up) when it wrote one.
  let tasksPerSecond = (n - failed) / seconds;
  try {
    const rows = JSON.parse(report) as { unit?: string; value?: number }[];
    const own = rows.find((r) => r.unit === "tasks/s")?.value;
    if (typeof own === "number") tasksPerSecond = own;
  } catch {
    // no report: keep our wall-clock figure
  }
  return { seconds, tasksPerSecond, output: `${out}${err}`, report, failed };
}
