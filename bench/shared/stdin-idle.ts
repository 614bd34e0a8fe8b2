// What an idle wasm container's attached stdin costs the shared-mode daemon: N containers of
// one pod through the CRI (containerd's CRI plugin holds the writer of each one's stdin fifo
// while it runs, as for `kubectl run -i`), each asleep in its module, with stdin attached
// (`stdin: true`) or not; the daemon's PSS and anonymous RSS (/proc/PID/smaps_rollup) before
// and after, per container. Not a test: prints one table. Needs root, containerd and runc.
//
//   bun bench/shared/stdin-idle.ts [--n 200] [--stdin] [--module sleep|cat] [--input KIB]
//                                  [--containerd BINARY]
//
// --module cat: test/wasm/cat.c, blocked reading its stdin (with --stdin; without, it reads
// /dev/null and ends at once). sleep (the default): the demo app's `sleep 3600`, which never
// reads it: with and without --stdin, the same module, and only the attached stdin differs.
// --input K (with --stdin --module cat): once all run, K KiB are sent to each through `crictl
// attach --stdin` (its stdin closed after, the container's left open: no stdin_once) and the
// attach is ended once the module has echoed them to its log: what the relay keeps of a read.

import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { CRI_IMAGES } from "../../test/support/cri.ts";
import { criInMode } from "../../test/support/cri-mode.ts";
import { pool } from "../../test/support/ramp.ts";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "200" },
    stdin: { type: "boolean", default: false },
    module: { type: "string", default: "sleep" },
    containerd: { type: "string", default: "/usr/bin/containerd" },
    parallel: { type: "string", default: "4" },
    input: { type: "string", default: "0" },
  },
});
const N = Number(values.n);
const command = values.module === "cat" ? ["/cat.wasm"] : ["/wasi-demo-app.wasm", "sleep", "3600"];

/** Pss and Anonymous of a process's smaps_rollup, in KiB. */
function rollup(pid: number): { pss: number; anon: number } {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? 0);
  return { pss: kib("Pss"), anon: kib("Anonymous") };
}

/**
 * The process's fds of containerd's stdin fifos (CRI names them `<id>-stdin`), and how many of
 * them an epoll set of the process waits on: a pending read of the relay's.
 */
function stdinFds(pid: number): { held: number; polled: number } {
  const fds = new Set<number>();
  const polled = new Set<number>();
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    let target = "";
    try {
      target = readlinkSync(`/proc/${pid}/fd/${name}`);
    } catch {
      continue;
    }
    if (target.endsWith("-stdin")) fds.add(Number(name));
    if (target === "anon_inode:[eventpoll]") {
      const info = readFileSync(`/proc/${pid}/fdinfo/${name}`, "utf8");
      for (const m of info.matchAll(/^tfd:\s+(\d+)/gm)) polled.add(Number(m[1]));
    }
  }
  return { held: fds.size, polled: [...fds].filter((fd) => polled.has(fd)).length };
}

const mode = await criInMode({ binary: values.containerd, shared: true, prefix: "/tmp/bwsb-" });
const { cri, daemon } = mode;
try {
  const pod = await cri.runPod("idle");
  // One run first: the engine is loaded lazily, and counts once whatever N is.
  const warm = await cri.createContainer(pod, {
    metadata: { name: "warm" },
    image: { image: CRI_IMAGES.tools },
    command: ["/wasi-demo-app.wasm", "echo", "x"],
    log_path: "warm.log",
  });
  await cri.crictlOk(["start", warm]);
  await cri.waitState(warm, "CONTAINER_EXITED");
  await cri.crictlOk(["rm", warm]);
  await Bun.sleep(3000);
  const before = rollup(daemon!.pid);
  const ids: string[] = [];
  await pool(
    Array.from({ length: N }, (_, i) => i),
    Number(values.parallel),
    async (i) => {
      const id = await cri.createContainer(pod, {
        metadata: { name: `c${i}` },
        image: { image: CRI_IMAGES.tools },
        command,
        log_path: `c${i}.log`,
        ...(values.stdin ? { stdin: true } : {}),
      });
      await cri.crictlOk(["start", id]);
      ids.push(id);
    },
  );
  for (const id of ids) await cri.waitState(id, "CONTAINER_RUNNING");
  const inputKiB = Number(values.input);
  if (inputKiB > 0) {
    const input = `${"x".repeat(1023)}\n`.repeat(inputKiB);
    await pool(ids, Number(values.parallel), async (id) => {
      const name = (await cri.inspect(id)).status.metadata.name as string;
      const log = join(pod.logDir, `${name}.log`);
      const p = Bun.spawn(cri.crictlArgv(["attach", "--stdin", id]), { stdin: "pipe", stdout: "ignore", stderr: "ignore" });
      p.stdin.write(input);
      await p.stdin.end();
      // The log's lines are CRI's (a prefix each): count the echoed lines.
      const echoed = () => (existsSync(log) ? (readFileSync(log, "utf8").match(/x\n/g)?.length ?? 0) : 0);
      const deadline = Date.now() + 60_000;
      while (echoed() < inputKiB && Date.now() < deadline) await Bun.sleep(100);
      if (echoed() < inputKiB) throw new Error(`${id}: ${echoed()} of ${inputKiB} lines echoed`);
      p.kill("SIGKILL");
      await p.exited;
    });
  }
  await Bun.sleep(5000);
  const after = rollup(daemon!.pid);
  const fifos = stdinFds(daemon!.pid);
  const per = (a: number, b: number) => ((b - a) / N).toFixed(1);
  console.log(
    `containerd ${values.containerd}, module ${values.module}, input ${values.input} KiB each, stdin ${values.stdin ? "attached" : "not attached"}, N ${N}`,
  );
  console.log(`stdin fifos the daemon holds: ${fifos.held}, of them in an epoll set: ${fifos.polled}`);
  console.log("| | daemon PSS (KiB) | daemon anonymous (KiB) |");
  console.log("| --- | ---: | ---: |");
  console.log(`| before | ${before.pss} | ${before.anon} |`);
  console.log(`| with ${N} idle | ${after.pss} | ${after.anon} |`);
  console.log(`| per container | ${per(before.pss, after.pss)} | ${per(before.anon, after.anon)} |`);
} finally {
  console.log(`daemon exit: ${await mode.stop()}`);
}
