// The figures of issue 16's memory and CPU attacks, in both modes, through a private
// containerd 1.6 (and in shared mode the daemon this starts, with its default flags). Not a
// test: prints what it measures. Needs root, containerd and runc.
//
//   bun bench/shared/limits.ts [SECONDS]     (default 5)
//
// Memory: mem4.wasm (four memories grown to 60 MiB each) and table24m.wasm (a table grown to
// 24 million elements) under --memory-limit 64 MiB: the exit code, and in shared mode how much
// the daemon's peak RSS grew (its high-water mark reset first, /proc/PID/clear_refs 5).
// CPU: busy.wasm with a quota of 0.1 (10 ms per 100 ms period) next to tick.wasm (a line every
// 10 ms, a neighbour with no limit): the spinner's CPU over SECONDS (ctr task metrics' usage,
// the thread's in shared mode, the cgroup's in normal mode) and the neighbour's lines meanwhile.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { SHARED_RUNTIME, startDaemon } from "../../test/support/daemon.ts";
import { RUNTIME, shimEnv, WASM } from "../../test/support/shim-env.ts";
import { writeImageArchive } from "../../tools/image/index.ts";

const seconds = Number(process.argv[2] ?? 5);
const MiB = 2 ** 20;
const IMAGE = "docker.io/library/bunwasi-bench-limits:latest";

const kib = (pid: number, field: string) =>
  Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) * 1024;

const dir = mkdtempSync("/tmp/bwb-");
const daemon = await startDaemon(join(dir, "d"));
const env = await shimEnv({ env: daemon.env, dir: join(dir, basename(dir)) });
const ctr = async (args: string[]) => {
  const r = await env.cd.ctr(args);
  if (r.code !== 0) throw new Error(`ctr ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
};
const usage = async (id: string) => Number(JSON.parse(await ctr(["task", "metrics", "--format", "json", id])).cpu?.usage?.total ?? 0);
const stop = async (id: string) => {
  await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
  const stopped = async () => /\bSTOPPED\b/.test((await ctr(["task", "ls"])).split("\n").find((l) => l.startsWith(`${id} `)) ?? "STOPPED");
  for (let i = 0; i < 200 && !(await stopped()); i++) await Bun.sleep(50);
  await env.cd.ctr(["task", "delete", id]);
  await env.cd.ctr(["container", "rm", id]);
};
try {
  const archive = join(dir, "bench.tar");
  writeImageArchive(archive, {
    name: IMAGE,
    files: ["mem4", "table24m", "busy", "tick", "grow"].map((m) => ({ path: `/${m}.wasm`, source: join(WASM, `${m}.wasm`) })),
    config: { entrypoint: ["/busy.wasm"] },
  });
  await ctr(["images", "import", archive]);
  let n = 0;
  for (const [mode, runtime] of [
    ["normal", RUNTIME],
    ["shared", SHARED_RUNTIME],
  ] as const) {
    // The engine is loaded on the daemon's first run: not counted (grow.wasm's grow is refused under 1 MiB).
    await env.cd.ctr(["run", "--rm", "--runtime", runtime, "--memory-limit", String(MiB), IMAGE, `warm-${n++}`, "/grow.wasm"]);
    for (const m of ["mem4", "table24m"]) {
      if (mode === "shared") writeFileSync(`/proc/${daemon.pid}/clear_refs`, "5");
      const before = kib(daemon.pid, "VmRSS");
      const r = await env.cd.ctr([
        "run",
        "--rm",
        "--runtime",
        runtime,
        "--memory-limit",
        String(64 * MiB),
        IMAGE,
        `m-${n++}`,
        `/${m}.wasm`,
      ]);
      const growth = mode === "shared" ? ` the daemon's peak RSS +${((kib(daemon.pid, "VmHWM") - before) / MiB).toFixed(1)} MiB` : "";
      console.log(`${mode}: ${m} under 64 MiB: exit ${r.code}${growth}`);
    }
    const spin = `spin-${n++}`;
    const tick = `tick-${n++}`;
    const tickLog = join(dir, `${tick}.log`);
    await ctr(["run", "-d", "--runtime", runtime, "--cpu-quota", "10000", "--cpu-period", "100000", IMAGE, spin, "/busy.wasm"]);
    await ctr(["run", "-d", "--runtime", runtime, "--log-uri", `file://${tickLog}`, IMAGE, tick, "/tick.wasm"]);
    await Bun.sleep(1000); // both under way
    const lines = () => {
      try {
        return readFileSync(tickLog, "utf8").split("\n").length - 1;
      } catch {
        return 0;
      }
    };
    const [u0, l0, t0] = [await usage(spin), lines(), performance.now()];
    await Bun.sleep(seconds * 1000);
    const [u1, l1, t1] = [await usage(spin), lines(), performance.now()];
    const wall = (t1 - t0) / 1000;
    console.log(
      `${mode}: busy.wasm with quota 0.1: ${((u1 - u0) / 1e9 / wall).toFixed(3)} CPU over ${wall.toFixed(2)} s; the neighbour ticked ${l1 - l0} times (every 10 ms: ${Math.round(wall * 100)} at most)`,
    );
    await stop(spin);
    await stop(tick);
  }
} finally {
  const ns = env.cd.namespace;
  await env.stop();
  await daemon.stop("SIGKILL");
  for (const d of [runtimeRoot(ns), containerStateDir(ns)]) rmSync(d, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
}
