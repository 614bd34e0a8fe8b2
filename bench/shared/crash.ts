// What a crash of the shared-mode daemon costs (issue 17 item 4): SIGKILL of containerd-wasmtimed
// under N running wasm containers (each asleep in poll_oneoff) and one native container (busybox
// sleep under runc, the daemon its subreaper), through a private containerd 1.6. Not a test:
// prints what it measured. Needs root, containerd and runc.
//
//   bun bench/shared/crash.ts [N…]      (default 1000; several: one column each, e.g. 50 200 1000)
//
// It reports: the time from the SIGKILL until containerd has seen every exit (`ctr events`
// /tasks/exit for each container) and until `ctr tasks ls` shows none RUNNING; the exit
// statuses containerd recorded; what is left behind (mounts, work dirs, sandbox sockets, the
// native container's process) once containerd is done, and after a restart of the daemon (which
// sweeps what dead daemons left, src/daemon/sweep.ts); the time until the restarted daemon
// answers on its socket and until a new pod has run on it. Each N gets its own containerd and
// daemon.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { containerStateDir } from "../../src/runtime-v2/paths.ts";
import { SHARED_RUNTIME, sharedEnv } from "../../test/support/daemon.ts";
import { IMAGES } from "../../test/support/shim-env.ts";
import { until } from "../../test/support/until.ts";

const NS = process.argv.length > 2 ? process.argv.slice(2).map(Number) : [1000];
const PARALLEL = 8;
/** How long a wait may take before the run fails (liveness only), and how often it looks (the figures' resolution). */
const WAIT = [600_000, 20] as const;

/** One row of the table: a label, and its figure for each N. */
type Figures = Record<string, string>;

async function measure(N: number): Promise<Figures> {
  const shared = await sharedEnv({ prefix: "/tmp/bwc-" });
  const { daemonDir, daemon, env } = shared;
  const ns = env.cd.namespace;

  /** Mount points that name this run's namespace or daemon directory. */
  const mounts = () =>
    readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .map((l) => l.split(" ")[4] ?? "")
      .filter((m) => m.includes(ns) || m.includes(daemonDir));
  const entries = (d: string) => (existsSync(d) ? readdirSync(d).length : 0);
  const rssMiB = (pid: number) => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;
  const tasks = () => env.cd.taskList();

  /** containerd's /tasks/exit events: each exit status, and when it was read. */
  const events = env.cd.watchExits();
  const { exits, seenAt } = events;

  try {
    // A probe: the engine loaded, and `ctr events` subscribed once its exit shows.
    const probe = await env.run(IMAGES.demo, "probe", ["/wasi-demo-app.wasm", "echo", "x"], { runtime: SHARED_RUNTIME });
    if (probe.code !== 0) throw new Error(`probe: ${probe.stderr}`);
    await until("the probe's exit event", () => exits.has("probe"), 30_000, WAIT[1]);

    const ids = Array.from({ length: N }, (_, i) => `w${i}`);
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (next < ids.length) {
          const id = ids[next++] as string;
          const r = await env.cd.ctr([
            "run",
            "-d",
            "--runtime",
            SHARED_RUNTIME,
            IMAGES.demo,
            id,
            "/wasi-demo-app.wasm",
            "sleep",
            "3600000",
          ]);
          if (r.code !== 0) throw new Error(`ctr run ${id}: ${r.stderr}`);
        }
      }),
    );
    const native = "native";
    const r = await env.cd.ctr(["run", "-d", "--runtime", SHARED_RUNTIME, IMAGES.busybox, native, "sleep", "3600"]);
    if (r.code !== 0) throw new Error(`ctr run native: ${r.stderr}`);
    const all = [...ids, native];
    await until(
      `all ${N + 1} to run`,
      async () => {
        const t = await tasks();
        return all.every((id) => t.get(id)?.[1] === "RUNNING");
      },
      ...WAIT,
    );
    const started = performance.now() - t0;
    const nativePid = (await tasks()).get(native)?.[0] as number;
    const before = {
      mounts: mounts().length,
      state: entries(containerStateDir(ns)),
      sockets: entries(join(daemonDir, "sandboxes")),
      rss: rssMiB(daemon.pid),
    };

    const killedAt = performance.now();
    await daemon.stop("SIGKILL");
    const sinceKill = (t: number) => ((t - killedAt) / 1000).toFixed(2);
    await until("containerd to see every exit", () => all.every((id) => exits.has(id)), ...WAIT);
    const lastExit = Math.max(...all.map((id) => seenAt.get(id) ?? 0));
    const firstExit = Math.min(...all.map((id) => seenAt.get(id) ?? 0));
    await until(
      "no task RUNNING",
      async () => {
        const t = await tasks();
        return all.every((id) => t.get(id)?.[1] !== "RUNNING");
      },
      ...WAIT,
    );
    const noneRunning = performance.now();
    const statuses = new Map<number, number>();
    for (const id of all) {
      const s = exits.get(id) ?? -1;
      statuses.set(s, (statuses.get(s) ?? 0) + 1);
    }
    // containerd cleans up a dead shim's tasks (`shim delete`, our thin shim's local clean-up);
    // what it leaves, once it has seen every exit:
    await Bun.sleep(2000);
    const after = {
      mounts: mounts().length,
      state: entries(containerStateDir(ns)),
      sockets: entries(join(daemonDir, "sandboxes")),
      nativeAlive: existsSync(`/proc/${nativePid}`),
    };

    const logFrom = daemon.log().length;
    const restartAt = performance.now();
    await daemon.restart();
    const answering = performance.now() - restartAt;
    const fresh = await env.run(IMAGES.demo, "after", ["/wasi-demo-app.wasm", "echo", "back"], { runtime: SHARED_RUNTIME });
    const served = performance.now() - restartAt;
    if (fresh.code !== 0 || fresh.stdout !== "back\nexiting\n") throw new Error(`the restarted daemon: ${fresh.stderr}`);
    // The sweep runs once the daemon serves; its log says when it is done.
    const log = () => daemon.log().slice(logFrom);
    if (log().includes("cleaning up "))
      await until("the sweep", () => /cleaned up \d+ containers left by dead daemons/.test(log()), ...WAIT);
    const sweptAt = performance.now() - restartAt;
    const swept = {
      mounts: mounts().length,
      state: entries(containerStateDir(ns)),
      sockets: entries(join(daemonDir, "sandboxes")),
      nativeAlive: existsSync(`/proc/${nativePid}`),
    };
    if (swept.state > 0) {
      // What the sweep did not take, and why (its warnings).
      const left = containerStateDir(ns);
      for (const d of readdirSync(left)) {
        let inside = "(a file)";
        try {
          inside = readdirSync(join(left, d)).join(" ");
        } catch {}
        console.error(`left: ${join(left, d)}: ${inside}`);
      }
      for (const l of log().split("\n")) if (l.includes("dead daemon")) console.error(l);
    }
    const alive = (a: boolean) => (a ? "alive" : "gone");
    return {
      "containers started in": `${(started / 1000).toFixed(1)} s`,
      "daemon RSS before the kill": `${before.rss.toFixed(0)} MiB`,
      "SIGKILL → first exit event": `${sinceKill(firstExit)} s`,
      "SIGKILL → containerd has seen every exit (`/tasks/exit`)": `${sinceKill(lastExit)} s`,
      "SIGKILL → no task RUNNING (`ctr tasks ls`)": `${sinceKill(noneRunning)} s`,
      "exit status containerd reports": [...statuses].map(([s, n]) => (statuses.size === 1 ? `${s} (all)` : `${s}: ${n}`)).join(", "),
      "left once containerd is done: mounts / work dirs": `${after.mounts} / ${after.state} (of ${before.mounts} / ${before.state})`,
      "left after the restart (its sweep): mounts / work dirs": `${swept.mounts} / ${swept.state}`,
      "the native container's process: after containerd / after the restart": `${alive(after.nativeAlive)} / ${alive(swept.nativeAlive)}`,
      "sandbox sockets after the kill → after a restart": `${after.sockets} → ${swept.sockets}`,
      "restart → daemon answers / a new pod has run / its sweep is done": `${(answering / 1000).toFixed(2)} / ${(served / 1000).toFixed(2)} / ${(sweptAt / 1000).toFixed(2)} s`,
    };
  } finally {
    events.stop();
    // What the crash left (the table says how much) goes too: SharedEnv.stop unmounts before it removes.
    await shared.stop();
  }
}

const columns: Figures[] = [];
for (const n of NS) {
  const c = await measure(n);
  columns.push(c);
  // Each column as soon as it is measured (a later N may fail).
  console.error(`N = ${n} (load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}):`);
  for (const [row, figure] of Object.entries(c)) console.error(`  ${row}: ${figure}`);
}
console.log(`N running wasm containers + 1 native (busybox under runc), containerd 1.6, one run each`);
console.log(`| | ${NS.map((n) => `N = ${n}`).join(" | ")} |`);
console.log(`| --- | ${NS.map(() => "---:").join(" | ")} |`);
for (const row of Object.keys(columns[0] ?? {})) console.log(`| ${row} | ${columns.map((c) => c[row]).join(" | ")} |`);
