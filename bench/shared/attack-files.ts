// The figures of the security issue's "special files" and "open files and blocked calls"
// classes, in shared mode, through a private containerd 1.6 and a daemon of this tree's build
// (build/bin: `bash scripts/build-shim.sh`). Not a test (test/e2e/attack-files.test.ts is):
// prints what it measures, so that the same command gives the before and the after.
//
//   bun bench/shared/attack-files.ts [--rounds 20]
//
//  blocked   for each kind of blocked host call (a fifo's open, a fifo's read, a stdout nobody
//            reads, a component's fifo open), `rounds` runs killed: the daemon's threads and fds
//            (/proc/<daemon>/task, /proc/<daemon>/fd) at baseline, once all are killed (not
//            deleted), and 12 s after they are deleted (the engine's idle runtime threads end
//            after 10 s)
//  loop      a module opening "/" until it fails, holding all: what it opened and why it
//            stopped, the daemon's fds, and how the next container's run went (and took)
//  swap      the module file swapped between Create and Start (a symlink to /dev/zero, a fifo,
//            a sparse file of 1 GiB): Start's answer, the daemon's peak RSS, Kill and Delete
// Needs root, containerd and runc.

import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { socketPath } from "../../src/runtime-v2/address.ts";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { TaskDefinition } from "../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Client } from "../../src/ttrpc/index.ts";
import { ctrTasks } from "../../test/support/ctr-tasks.ts";
import { SHARED_RUNTIME, startDaemon } from "../../test/support/daemon.ts";
import { IMAGES, REPO, shimEnv, WASM } from "../../test/support/shim-env.ts";
import { writeImageArchive } from "../../tools/image/index.ts";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "20" } } });
const ROUNDS = Number(values.rounds);
const IMAGE = "docker.io/library/bunwasi-attack-files:latest";

const dir = mkdtempSync("/tmp/bwaf-bench-");
const daemon = await startDaemon(join(dir, "d"));
const env = await shimEnv({ env: daemon.env, dir: join(dir, basename(dir)) });
const t = ctrTasks(
  () => env.cd,
  () => dir,
);
const counts = () => ({ threads: readdirSync(`/proc/${daemon.pid}/task`).length, fds: daemon.fdCount() });
const rssMiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${daemon.pid}/status`, "utf8"))?.[1] ?? 0) / 1024;
let seq = 0;
const writer: { proc?: Bun.Subprocess } = {};

try {
  writeImageArchive(join(dir, "a.tar"), {
    name: IMAGE,
    files: [
      ...["escape", "bigout", "openloop", "wasi-demo-app"].map((m) => ({ path: `/${m}.wasm`, source: join(WASM, `${m}.wasm`) })),
      { path: "/escape-component.wasm", source: join(WASM, "components/escape.wasm") },
      { path: "/fifo", fifo: true as const },
      { path: "/notes.txt", data: "in the image\n" },
    ],
  });
  await t.ctrOk(["images", "import", join(dir, "a.tar")]);
  const vol = join(dir, "vol");
  mkdirSync(vol);
  Bun.spawnSync(["mkfifo", join(vol, "fifo")]);
  writer.proc = Bun.spawn(["sh", "-c", `exec 3<>"${join(vol, "fifo")}"; exec sleep 3600`]);
  const volume = ["--mount", `type=bind,src=${vol},dst=/vol,options=rbind:rw`];

  // --- blocked ---
  for (const a of [
    ["/escape.wasm", "/notes.txt"],
    ["/escape-component.wasm", "/notes.txt"],
    ["/bigout.wasm", "0"],
  ])
    await env.run(IMAGE, `warm-${seq++}`, a, { runtime: SHARED_RUNTIME });
  await Bun.sleep(12_000);
  const kinds: [string, string[], string[]][] = [
    ["opening a fifo of the image", ["/escape.wasm", "/fifo"], []],
    ["reading a fifo of a volume", ["/escape.wasm", "/vol/fifo"], volume],
    ["writing a stdout nobody reads", ["/bigout.wasm", "64"], []],
    ["(component) opening a fifo of the image", ["/escape-component.wasm", "/fifo"], []],
  ];
  for (const [name, args, extra] of kinds) {
    const base = counts();
    const ids: string[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const id = `blocked-${seq++}`;
      ids.push(id);
      await t.ctrOk(["run", "-d", "--runtime", SHARED_RUNTIME, ...extra, IMAGE, id, ...args]);
      await Bun.sleep(300);
      await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
      await t.waitStatus(id, "STOPPED");
    }
    await Bun.sleep(1000);
    const killed = counts();
    for (const id of ids) {
      await t.deleteTask(id).catch(() => {});
      await env.cd.ctr(["containers", "delete", id]);
    }
    await Bun.sleep(12_000);
    console.log(
      `blocked: ${ROUNDS} runs ${name}: daemon threads/fds ${base.threads}/${base.fds} at baseline, ${killed.threads}/${killed.fds} all killed (not deleted), ${counts().threads}/${counts().fds} deleted`,
    );
  }

  // --- loop ---
  {
    const before = counts();
    const id = `loop-${seq++}`;
    const log = await t.runDetached(id, ["/openloop.wasm", "hold"], IMAGE, SHARED_RUNTIME);
    const deadline = Date.now() + 120_000;
    while (!readFileSync(log, "utf8").includes("opened") && Date.now() < deadline) await Bun.sleep(100);
    const held = counts();
    const t0 = performance.now();
    const next = await env.run(IMAGES.demo, `next-${seq++}`, ["/wasi-demo-app.wasm", "echo", "next"], {
      runtime: SHARED_RUNTIME,
      timeoutMs: 30_000,
    });
    const ms = performance.now() - t0;
    console.log(
      `loop: "${readFileSync(log, "utf8").trim()}"; daemon fds ${before.fds} before, ${held.fds} held; next container: exit ${next.code} in ${ms.toFixed(0)} ms ${next.code ? next.stderr.trim().slice(0, 160) : ""}`,
    );
    await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
    await t.waitStatus(id, "STOPPED").catch(() => {});
    await t.deleteTask(id).catch(() => {});
    await env.cd.ctr(["containers", "delete", id]);
  }

  // --- swap ---
  const swaps: [string, (f: string) => void][] = [
    ["a symlink to /dev/zero", (f) => symlinkSync("/dev/zero", f)],
    ["a fifo", (f) => Bun.spawnSync(["mkfifo", f])],
    ["a sparse file of 1 GiB", (f) => Bun.spawnSync(["truncate", "-s", "1G", f])],
  ];
  for (const [name, swap] of swaps) {
    const id = `swap-${seq++}`;
    const b = join(dir, "bundles", id);
    mkdirSync(join(b, "rootfs"), { recursive: true });
    copyFileSync(join(WASM, "wasi-demo-app.wasm"), join(b, "rootfs/app.wasm"));
    Bun.spawnSync(["runc", "spec"], { cwd: b });
    const spec = JSON.parse(readFileSync(join(b, "config.json"), "utf8"));
    spec.process.terminal = false;
    spec.process.args = ["/app.wasm", "echo", "hi"];
    spec.root = { path: "rootfs", readonly: false };
    spec.annotations = { "io.kubernetes.cri.sandbox-id": `pod-${id}` };
    writeFileSync(join(b, "config.json"), JSON.stringify(spec));
    const started = Bun.spawnSync(
      [
        join(REPO, "build/bin/containerd-shim-wasmtimed-v1"),
        ...["-namespace", env.cd.namespace, "-address", env.cd.address, "-publish-binary", "/usr/bin/containerd", "-id", id, "start"],
      ],
      { cwd: b, env: { ...(process.env as Record<string, string>), TTRPC_ADDRESS: env.cd.ttrpcAddress, ...daemon.env }, stdout: "pipe" },
    );
    const client = await Client.connect(socketPath(started.stdout.toString()));
    const task = client.service(TaskDefinition);
    await task.create({
      ...{ id, bundle: b, rootfs: [], terminal: false, stdin: "", checkpoint: "", parentCheckpoint: "", options: undefined },
      ...{ stdout: `file://${join(dir, `${id}.out`)}`, stderr: `file://${join(dir, `${id}.err`)}` },
    });
    rmSync(join(b, "rootfs/app.wasm"));
    swap(join(b, "rootfs/app.wasm"));
    let peak = rssMiB();
    const before = peak;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssMiB());
    }, 20);
    const settle = async (p: Promise<unknown>, ms: number) =>
      Promise.race([
        p.then(
          () => "ok",
          (e: Error) => `error: ${e.message.slice(0, 120)}`,
        ),
        Bun.sleep(ms).then(() => `no answer in ${ms} ms`),
      ]);
    const start = await settle(task.start({ id, execId: "" }), 10_000);
    const exited = await settle(task.wait({ id, execId: "" }), 5000);
    const kill = await settle(task.kill({ id, execId: "", signal: 9, all: false }), 5000);
    const del = await settle(task.delete({ id, execId: "" }), 5000);
    clearInterval(sampler);
    console.log(
      `swap: ${name}: Start ${start}; exit ${exited}; Kill ${kill}; Delete ${del}; daemon RSS ${before.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB`,
    );
    client.close();
  }
} finally {
  writer.proc?.kill();
  const ns = env.cd.namespace;
  await env.stop();
  await daemon.stop("SIGKILL");
  for (const d of [runtimeRoot(ns), containerStateDir(ns)]) rmSync(d, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
}
