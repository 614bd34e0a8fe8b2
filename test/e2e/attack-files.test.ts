// Attacks through files and blocked calls (the security issue's items 1 and 4), in both modes:
// normal (runtime io.containerd.wasmtime.v1: the executor under runc) and shared
// (io.containerd.wasmtimed.v1: the daemon this file starts), on each containerd (Debian's 1.6
// and the pinned 2.x, test/support/containerd-versions.ts).
//
//  - A fifo (in the image, in a volume) and a unix socket (in a volume) are not opened: EACCES,
//    where a fifo's open used to wait for a peer for ever, holding a daemon thread no kill freed.
//  - A module blocked in a host call and killed, 20 times over: the daemon's threads come back to
//    their baseline once each run is killed, its fds once each container is deleted
//    (/proc/<daemon>/task, /proc/<daemon>/fd). A module on a thread of its own blocks that
//    thread (a write to a stdout nobody reads: the daemon drains it at the kill); a pooled one
//    (src/engines/wasmtime/pool.ts) waits holding none: 20 at once, each with its stdout full,
//    add no thread per run and none waits in a pipe, and each is killed at once.
//  - A module opening "/" in a loop stops at its cap with EMFILE (the spec's RLIMIT_NOFILE, ctr's
//    1024), and the next container starts: it used to take the daemon to its fd limit.
//  - The module file swapped between Create and Start (a symlink to /dev/zero, a fifo, a file
//    larger than a module may be): Start fails saying what the file is now (normal mode: the
//    executor, exit 125 with that message), nothing is read from it, and the daemon serves the
//    next pod. Driven over ttrpc, as containerd would, to put the swap between the two calls.
// Needs root, containerd and runc.

import { dlopen, ptr } from "bun:ffi";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { availableParallelism } from "node:os";
import { basename, join } from "node:path";
import { syscallTable } from "../../src/linux/libc.ts";
import type { Spec } from "../../src/oci/spec.ts";
import { socketPath } from "../../src/runtime-v2/address.ts";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { TaskDefinition as TaskV2 } from "../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Client, TtrpcError } from "../../src/ttrpc/index.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { mountsUnder } from "../support/containerd.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { ctrTasks } from "../support/ctr-tasks.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "../support/daemon.ts";
import { IMAGES, REPO, RUNTIME, type ShimEnv, shimEnv, WASM } from "../support/shim-env.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 180_000;
const IMAGE = "docker.io/library/bunwasi-attack-files:latest";
const ROUNDS = 20;
/** How long a daemon's counts may take to come back (liveness only: idle runtime threads end after 10 s). */
const SETTLE_MS = 60_000;

/**
 * Writes 64 KiB to stdout again and again until a write fails. It imports sock_accept (never
 * called), which the run pools do not serve (src/engines/wasmtime/pool.ts): so it runs on a
 * thread of its own, as bigout would, were it not pooled.
 */
const BIGOUT_THREAD_WAT = `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    ;; an iovec at 0: 65536 bytes at 16; nwritten at 8
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $more
      (br_if $more (i32.eqz (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))))
`;

/**
 * Opens the image's /fifo (nobody writes it: an open would wait for ever) through path_open,
 * prints "open: NN\n" (NN: the WASI errno, 02 = EACCES), then sleeps an hour in poll_oneoff.
 * It imports path_open: in shared mode a run pool takes it, the file guard in its store.
 */
const FIFO_THEN_SLEEP_WAT = `(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "fifo")
  (data (i32.const 300) "open: 00\\n")
  (func (export "_start")
    (local $e i32)
    ;; fd 3 is the root ("/"); rights: fd_read; the new fd at 200
    (local.set $e (call $open (i32.const 3) (i32.const 1) (i32.const 100) (i32.const 4) (i32.const 0)
      (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))
    (i32.store8 (i32.const 306) (i32.add (i32.const 48) (i32.div_u (local.get $e) (i32.const 10))))
    (i32.store8 (i32.const 307) (i32.add (i32.const 48) (i32.rem_u (local.get $e) (i32.const 10))))
    (i32.store (i32.const 0) (i32.const 300))
    (i32.store (i32.const 4) (i32.const 9))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; one relative clock subscription of an hour at 400; its event at 500, the count at 600
    (i64.store (i32.const 400) (i64.const 1))
    (i32.store8 (i32.const 408) (i32.const 0))
    (i32.store (i32.const 416) (i32.const 1))
    (i64.store (i32.const 424) (i64.const 3600000000000))
    (i64.store (i32.const 432) (i64.const 0))
    (i32.store16 (i32.const 440) (i32.const 0))
    (loop $l (drop (call $poll (i32.const 400) (i32.const 500) (i32.const 1) (i32.const 600))) (br $l))))
`;

/** How full a pipe is (FIONREAD) and what it holds at most (F_GETPIPE_SZ), by syscall(2): both calls are variadic. */
const pipeCalls = (() => {
  const { syscall } = dlopen("libc.so.6", { syscall: { args: ["i64", "i64", "i64", "i64"], returns: "i64" } }).symbols;
  const nr = syscallTable();
  return {
    queued(fd: number): number {
      const n = new Int32Array(1);
      return Number(syscall(nr.ioctl, fd, 0x541b, ptr(n))) === 0 ? (n[0] as number) : -1;
    },
    size: (fd: number) => Number(syscall(nr.fcntl, fd, 1032, 0)),
  };
})();

const MODES = [
  { name: "normal mode", runtime: RUNTIME, shim: join(REPO, "build/bin/containerd-shim-wasmtime-v1"), shared: false },
  { name: "shared mode", runtime: SHARED_RUNTIME, shim: join(REPO, "build/bin/containerd-shim-wasmtimed-v1"), shared: true },
] as const;

let seq = 0;
const uid = (what: string) => `af-${what}-${process.pid}-${seq++}`;

// Every case on each containerd: one containerd and one daemon per version, both modes on it.
for (const c of CONTAINERDS) {
  describe(`containerd ${c.name}`, () => {
    let dir: string;
    let daemon: Daemon;
    let env: ShimEnv;
    /** Kept listening while the suite runs: a socket file in a volume. */
    let listener: { stop(): void } | undefined;
    /** A writer held on the volume's fifo, so that an open of it finds a peer and a read waits for data. */
    let fifoWriter: Bun.Subprocess | undefined;
    let vol: string;

    beforeAll(async () => {
      dir = mkdtempSync("/tmp/bwaf-");
      const built = Bun.spawnSync(["bash", join(REPO, "scripts/build-shim.sh")], { stdout: "pipe", stderr: "pipe" });
      if (built.exitCode !== 0) throw new Error(`build-shim.sh: ${built.stderr.toString()}`);
      const components = Bun.spawnSync(["bash", join(REPO, "scripts/build-components.sh")], { stdout: "pipe", stderr: "pipe" });
      if (components.exitCode !== 0) throw new Error(`build-components.sh: ${components.stderr.toString()}`);
      daemon = await startDaemon(join(dir, "d"));
      env = await shimEnv({ binary: c.binary, env: daemon.env, dir: join(dir, basename(dir)) });
      const archive = join(dir, "attack-files.tar");
      writeImageArchive(archive, {
        name: IMAGE,
        files: [
          ...["escape", "bigout", "openloop", "wasi-demo-app"].map((m) => ({ path: `/${m}.wasm`, source: join(WASM, `${m}.wasm`) })),
          // A component: its WASI is wasmtime's preview 2, which the file guard does not shadow.
          { path: "/escape-component.wasm", source: join(WASM, "components/escape.wasm") },
          { path: "/bigout-thread.wat", data: BIGOUT_THREAD_WAT, mode: 0o644 },
          { path: "/fifo-then-sleep.wat", data: FIFO_THEN_SLEEP_WAT, mode: 0o644 },
          { path: "/notes.txt", data: "in the image\n", mode: 0o644 },
          { path: "/fifo", fifo: true as const },
        ],
        config: { entrypoint: ["/escape.wasm"] },
      });
      const r = await env.cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import ${archive}: ${r.stderr}`);
      // A volume with a regular file, a fifo with a writer on it, and a listening unix socket.
      vol = join(dir, "vol");
      mkdirSync(vol);
      writeFileSync(join(vol, "f.txt"), "in the volume\n");
      for (const f of ["fifo", "lonely-fifo"]) {
        const m = Bun.spawnSync(["mkfifo", join(vol, f)]);
        if (m.exitCode !== 0) throw new Error(`mkfifo: ${m.stderr.toString()}`);
      }
      fifoWriter = Bun.spawn(["sh", "-c", `exec 3<>"${join(vol, "fifo")}"; exec sleep 3600`], { stdout: "ignore", stderr: "ignore" });
      listener = Bun.listen({ unix: join(vol, "sock"), socket: { data() {} } });
    }, 300_000);

    afterAll(async () => {
      listener?.stop();
      fifoWriter?.kill("SIGKILL");
      const ns = env?.cd.namespace;
      await env?.stop();
      await daemon?.stop("SIGKILL");
      if (ns) for (const d of [runtimeRoot(ns), containerStateDir(ns)]) rmSync(d, { recursive: true, force: true });
      if (dir) {
        expect(mountsUnder(dir)).toEqual([]);
        rmSync(dir, { recursive: true, force: true });
      }
    }, T);

    const volume = () => ["--mount", `type=bind,src=${vol},dst=/vol,options=rbind:rw`];

    /** The daemon's threads and open fds now. */
    function counts(): { threads: number; fds: number } {
      return { threads: readdirSync(`/proc/${daemon.pid}/task`).length, fds: daemon.fdCount() };
    }

    /** The daemon's threads by name (for a failure's message). */
    function threadNames(): string {
      const names = new Map<string, number>();
      for (const t of readdirSync(`/proc/${daemon.pid}/task`)) {
        let n = "?";
        try {
          n = readFileSync(`/proc/${daemon.pid}/task/${t}/comm`, "utf8").trim();
        } catch {}
        names.set(n, (names.get(n) ?? 0) + 1);
      }
      return [...names].map(([n, c]) => `${n}×${c}`).join(" ");
    }

    /** The daemon's log lines about container `id`. */
    function logOf(id: string): string {
      return daemon
        .log()
        .split("\n")
        .filter((l) => l.includes(`${id}:`))
        .join("\n");
    }

    /** Polls until `ok(counts())` (liveness only); returns the last counts. */
    async function settle(ok: (c: { threads: number; fds: number }) => boolean): Promise<{ threads: number; fds: number }> {
      const deadline = Date.now() + SETTLE_MS;
      let c = counts();
      while (!ok(c) && Date.now() < deadline) {
        await Bun.sleep(100);
        c = counts();
      }
      return c;
    }

    /** Polls until `done()` (liveness only, as settle); returns `value()` then. */
    async function settleOn<T>(done: () => boolean, value: () => T): Promise<T> {
      const deadline = Date.now() + SETTLE_MS;
      while (!done() && Date.now() < deadline) await Bun.sleep(100);
      return value();
    }

    for (const mode of MODES) {
      describe(`files and blocked calls, ${mode.name}`, () => {
        const t = ctrTasks(
          () => env.cd,
          () => dir,
        );
        const run = (args: string[], extra: string[] = [], timeoutMs = 60_000) =>
          env.run(IMAGE, uid("run"), args, { runtime: mode.runtime, extra, timeoutMs });

        /** Kills `id` (it may have ended already), waits for it to stop, deletes it; its exit status. */
        async function killAndDelete(id: string): Promise<number> {
          await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
          await t.waitStatus(id, "STOPPED");
          const status = await t.deleteTask(id);
          await t.ctrOk(["containers", "delete", id]);
          return status;
        }

        test(
          "a fifo in the image, a fifo and a unix socket in a volume are not opened (EACCES); files and directories are",
          async () => {
            const r = await run(
              ["/escape.wasm", "/fifo", "/vol/fifo", "/vol/lonely-fifo", "/vol/sock", "/notes.txt", "/vol/f.txt", "/vol"],
              volume(),
            );
            expect({ code: r.code, err: r.stderr }).toEqual({ code: 0, err: "" });
            expect(r.stdout).toBe(
              [
                "/fifo: error Permission denied",
                "/vol/fifo: error Permission denied",
                "/vol/lonely-fifo: error Permission denied",
                "/vol/sock: error Permission denied",
                "/notes.txt: ok in the image",
                "/vol/f.txt: ok in the volume",
                // A directory opens (fopen of one does; reading it is what fails, and escape.c reads a line).
                "/vol: ok ",
                "",
              ].join("\n"),
            );
          },
          T,
        );

        test(
          "a module opening / in a loop stops at its open-file limit with EMFILE, and the next container starts",
          async () => {
            // Measured once a run has made the engine's runtime (its epoll and event fds stay).
            if (mode.shared) expect((await run(["/escape.wasm", "/notes.txt"])).code).toBe(0);
            const before = mode.shared ? counts() : undefined;
            const id = uid("loop");
            const log = await t.runDetached(id, ["/openloop.wasm", "hold"], IMAGE, mode.runtime);
            try {
              const deadline = Date.now() + 60_000; // liveness only
              while (!readFileSync(log, "utf8").includes("opened") && Date.now() < deadline) await Bun.sleep(50);
              const m = /^opened (\d+): (.*)$/m.exec(readFileSync(log, "utf8"));
              expect(m?.[2]).toBe("No file descriptors available"); // wasi-libc's words for EMFILE
              // ctr's spec sets RLIMIT_NOFILE to 1024: stdio, the preopens and the rest of the
              // process (normal mode: the executor's own fds) count too.
              expect(Number(m?.[1])).toBeGreaterThan(900);
              expect(Number(m?.[1])).toBeLessThan(1024);
              if (before) {
                // The daemon holds them, as many and no more.
                expect(counts().fds - before.fds).toBeLessThan(1024 + 16);
              }
              // The next container, while the first still holds all it could open.
              const next = await env.run(IMAGES.demo, uid("next"), ["/wasi-demo-app.wasm", "echo", "next"], {
                runtime: mode.runtime,
                timeoutMs: 60_000,
              });
              expect({ code: next.code, out: next.stdout, err: next.stderr }).toEqual({ code: 0, out: "next\nexiting\n", err: "" });
            } finally {
              await killAndDelete(id);
            }
            if (before) {
              const after = await settle((c) => c.fds <= before.fds);
              expect(after.fds).toBeLessThanOrEqual(before.fds);
            }
          },
          T,
        );

        /**
         * ROUNDS modules that open the image's fifo (refused: "open: 02", EACCES) and then sleep,
         * all at once; `whileHeld` looks at them while they sleep; then each is killed: 137 each.
         */
        async function guardedSleepers(whileHeld: () => void | Promise<void>): Promise<void> {
          const ids: string[] = [];
          try {
            const logs: string[] = [];
            for (let i = 0; i < ROUNDS; i++) {
              const id = uid("guarded");
              ids.push(id);
              logs.push(await t.runDetached(id, ["/fifo-then-sleep.wat"], IMAGE, mode.runtime));
            }
            const refused = () => logs.filter((l) => existsSync(l) && readFileSync(l, "utf8") === "open: 02\n").length;
            expect(await settleOn(() => refused() === ROUNDS, refused)).toBe(ROUNDS);
            const tasks = await t.tasks();
            expect(ids.filter((id) => tasks.get(id)?.status === "RUNNING").length).toBe(ROUNDS);
            await whileHeld();
            const statuses: number[] = [];
            for (const id of ids.splice(0)) statuses.push(await killAndDelete(id));
            expect(statuses).toEqual(Array(ROUNDS).fill(137));
          } finally {
            for (const id of ids) await killAndDelete(id).catch(() => {});
          }
        }

        if (mode.shared) {
          /** The daemon's counts once one run of each kind has come and gone (its runtime's threads made). */
          let baseline: { threads: number; fds: number };

          test(
            "baseline: the daemon idle after runs of the modules used below",
            async () => {
              for (const args of [
                ["/escape.wasm", "/notes.txt"],
                ["/bigout.wasm", "0"],
                ["/escape.wasm", "/vol/f.txt"],
              ]) {
                const r = await run(args, volume());
                expect(r.code).toBe(0);
              }
              // Idle: nothing of those runs left but what the daemon keeps for every run.
              const c = await settle((x) => {
                const again = counts();
                return again.threads === x.threads && again.fds === x.fds;
              });
              baseline = c;
              expect(baseline.threads).toBeGreaterThan(0);
            },
            T,
          );

          /**
           * Until `id` has ended (a refused open) or is blocked where the test wants it: a thread of
           * the daemon waits in a pipe or fifo that did not in `before`, taken before the run started
           * (an earlier round's killed run may still wait there, or end meanwhile: a count would
           * miss a new waiter while an old one ends); liveness only.
           */
          async function blockedOrOver(id: string, before: Set<string>): Promise<void> {
            const deadline = Date.now() + 30_000;
            while (Date.now() < deadline) {
              const st = (await t.tasks()).get(id)?.status;
              if (st === "STOPPED") return;
              if (st === "RUNNING" && newWaiters(before).length > 0) return;
              await Bun.sleep(20);
            }
          }

          /** The daemon's threads (tids) that sleep in a pipe's or a fifo's read, write or open. */
          function pipeWaiters(): Set<string> {
            const out = new Set<string>();
            for (const tid of readdirSync(`/proc/${daemon.pid}/task`)) {
              try {
                if (/pipe|fifo|partner/.test(readFileSync(`/proc/${daemon.pid}/task/${tid}/wchan`, "utf8"))) out.add(tid);
              } catch {}
            }
            return out;
          }

          /** The daemon's threads waiting in a pipe now that were not in `before`. */
          const newWaiters = (before: Set<string>) => [...pipeWaiters()].filter((tid) => !before.has(tid));

          /** `freed`: what the daemon logs it did to free the killed runs' threads (src/daemon/unstick.ts). */
          const blocked: { name: string; args: string[]; extra: () => string[]; freed?: RegExp }[] = [
            // Before: the open waited for a writer (the fifo in the image has none).
            { name: "opening a fifo of the image", args: ["/escape.wasm", "/fifo"], extra: () => [] },
            // Before: the open found the test's writer, and the read waited for data.
            { name: "reading a fifo of a volume", args: ["/escape.wasm", "/vol/fifo"], extra: volume },
            // A detached ctr leaves nobody reading the container's stdout fifo: the writes fill it,
            // and the last one holds the run's thread (a pooled run's is a case of its own below).
            {
              name: "writing a stdout nobody reads on a thread of their own",
              args: ["/bigout-thread.wat"],
              extra: () => [],
              freed: /drained \d+ bytes of output nobody read/,
            },
            // A component's open of a fifo does wait (on a thread of the engine's runtime): the kill
            // wakes that call (src/daemon/unstick.ts). So would a core module's, had a fifo been
            // renamed in between the guard's look and the open.
            {
              name: "(components) opening a fifo of the image",
              args: ["/escape-component.wasm", "/fifo"],
              extra: () => [],
              freed: /woke \d+ blocked calls on files of the view/,
            },
          ];
          for (const b of blocked) {
            test(
              `${ROUNDS} modules ${b.name}, killed: the daemon's threads are back to their baseline before Delete, its fds after`,
              async () => {
                const ids: string[] = [];
                try {
                  for (let i = 0; i < ROUNDS; i++) {
                    const id = uid("blocked");
                    ids.push(id);
                    const before = pipeWaiters();
                    // No log file: with one, stdout would be a file, which never blocks a write.
                    await t.ctrOk(["run", "-d", "--runtime", mode.runtime, ...b.extra(), IMAGE, id, ...b.args]);
                    await blockedOrOver(id, before);
                    await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
                    await t.waitStatus(id, "STOPPED");
                  }
                  // Every run is over: its thread (and its runtime's helpers) gone, not only its exit reported.
                  const killed = await settle((c) => c.threads <= baseline.threads);
                  const over = killed.threads - baseline.threads;
                  expect({ over: Math.max(0, over), threads: over > 0 ? threadNames() : "" }).toEqual({ over: 0, threads: "" });
                  // Each of them was blocked, and freed by the daemon.
                  // (Said once the freed thread is over: looked for until then, liveness only.)
                  const freed = () => ids.filter((id) => b.freed?.test(logOf(id))).length;
                  if (b.freed) expect(await settleOn(() => freed() === ROUNDS, freed)).toBe(ROUNDS);
                } finally {
                  for (const id of ids) {
                    await t.deleteTask(id).catch(() => {});
                    await t.ctrOk(["containers", "delete", id]).catch(() => {});
                  }
                }
                const deleted = await settle((c) => c.threads <= baseline.threads && c.fds <= baseline.fds);
                expect(deleted.fds).toBeLessThanOrEqual(baseline.fds);
                expect(deleted.threads).toBeLessThanOrEqual(baseline.threads);
              },
              T,
            );
          }

          /**
           * Whether the pipe of `id`'s stdout (the daemon's fd of containerd's fifo) is full: its
           * writer waits for room. Looked at through a reader of our own, which reads nothing.
           */
          function stdoutFull(id: string): boolean {
            for (const n of readdirSync(`/proc/${daemon.pid}/fd`)) {
              let link = "";
              try {
                link = readlinkSync(`/proc/${daemon.pid}/fd/${n}`);
              } catch {}
              if (!link.endsWith(`/${id}-stdout`)) continue;
              let fd = -1;
              try {
                fd = openSync(`/proc/${daemon.pid}/fd/${n}`, constants.O_RDONLY | constants.O_NONBLOCK);
                const size = pipeCalls.size(fd);
                return size > 0 && pipeCalls.queued(fd) === size;
              } catch {
                return false;
              } finally {
                if (fd >= 0) closeSync(fd);
              }
            }
            return false;
          }

          test(
            `${ROUNDS} pooled modules writing a stdout nobody reads, at once: each waits for room holding no thread; killed, 137 each, the daemon's threads back to their baseline before Delete, its fds after`,
            async () => {
              const ids: string[] = [];
              try {
                const waiters = pipeWaiters();
                for (let i = 0; i < ROUNDS; i++) {
                  const id = uid("pooled");
                  ids.push(id);
                  // No log file: with one, stdout would be a file, which never fills.
                  await t.ctrOk(["run", "-d", "--runtime", mode.runtime, IMAGE, id, "/bigout.wasm", "64"]);
                }
                // Each one's stdout fills (liveness only): its module has more to write and waits.
                const full = () => ids.filter(stdoutFull).length;
                expect(await settleOn(() => full() === ROUNDS, full)).toBe(ROUNDS);
                const tasks = await t.tasks();
                expect(ids.filter((id) => tasks.get(id)?.status === "RUNNING").length).toBe(ROUNDS);
                // Waiting, none holds a thread of the daemon in a write (a run of its own would: the
                // case above), and the daemon has no thread per run: its pools, one per core at most.
                expect(newWaiters(waiters)).toEqual([]);
                const held = counts().threads - baseline.threads;
                expect({ held: held <= availableParallelism(), threads: threadNames() }).toMatchObject({ held: true });
                for (const id of ids) {
                  await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
                  await t.waitStatus(id, "STOPPED");
                }
                // Every run is over, and its pool gone once idle.
                const killed = await settle((c) => c.threads <= baseline.threads);
                const over = killed.threads - baseline.threads;
                expect({ over: Math.max(0, over), threads: over > 0 ? threadNames() : "" }).toEqual({ over: 0, threads: "" });
                const statuses: number[] = [];
                for (const id of ids.splice(0)) {
                  statuses.push(await t.deleteTask(id));
                  await t.ctrOk(["containers", "delete", id]);
                }
                expect(statuses).toEqual(Array(ROUNDS).fill(137));
              } finally {
                for (const id of ids) {
                  await t.deleteTask(id).catch(() => {});
                  await t.ctrOk(["containers", "delete", id]).catch(() => {});
                }
              }
              const deleted = await settle((c) => c.threads <= baseline.threads && c.fds <= baseline.fds);
              expect(deleted.fds).toBeLessThanOrEqual(baseline.fds);
              expect(deleted.threads).toBeLessThanOrEqual(baseline.threads);
            },
            T,
          );
          test(
            `${ROUNDS} modules opening a fifo (EACCES) then asleep, at once, pooled (the file guard in a pool's store): no thread per run; killed, 137 each; the daemon's threads back to their baseline, its fds after Delete`,
            async () => {
              await guardedSleepers(() => {
                // A thread of its own per run would add ROUNDS; the pools add one per core at most.
                const held = counts().threads - baseline.threads;
                expect({ held: held <= availableParallelism(), threads: threadNames() }).toMatchObject({ held: true });
              });
              const deleted = await settle((c) => c.threads <= baseline.threads && c.fds <= baseline.fds);
              expect(deleted.fds).toBeLessThanOrEqual(baseline.fds);
              expect(deleted.threads).toBeLessThanOrEqual(baseline.threads);
            },
            T,
          );
        } else {
          test(
            `${ROUNDS} modules opening a fifo (EACCES) then asleep, at once; killed, 137 each`,
            async () => {
              await guardedSleepers(() => {});
            },
            T,
          );
          test(
            "a module writing a stdout nobody reads ends on SIGKILL",
            async () => {
              const id = uid("stdout");
              await t.ctrOk(["run", "-d", "--runtime", mode.runtime, IMAGE, id, "/bigout.wasm", "64"]);
              await t.waitStatus(id, "RUNNING");
              expect(await killAndDelete(id)).toBe(137);
            },
            T,
          );
        }

        describe("the module file swapped between Create and Start", () => {
          const pod = `af-pod-${mode.shared ? "s" : "n"}-${process.pid}`;

          /** A bundle whose rootfs holds /app.wasm (wasi-demo-app), in pod `pod`. */
          function bundle(id: string): string {
            const b = join(dir, "bundles", id);
            mkdirSync(join(b, "rootfs"), { recursive: true });
            copyFileSync(join(WASM, "wasi-demo-app.wasm"), join(b, "rootfs/app.wasm"));
            const r = Bun.spawnSync(["runc", "spec"], { cwd: b });
            if (r.exitCode !== 0) throw new Error(`runc spec: ${r.stderr}`);
            const spec = JSON.parse(readFileSync(join(b, "config.json"), "utf8")) as Spec;
            spec.process.terminal = false;
            spec.process.args = ["/app.wasm", "echo", "hello"];
            spec.root = { path: "rootfs", readonly: false };
            spec.annotations = { "io.kubernetes.cri.sandbox-id": pod };
            writeFileSync(join(b, "config.json"), JSON.stringify(spec));
            return b;
          }

          /** The pod's task service, through the shim's `start` (shared mode: the daemon's sandbox). */
          function shimStart(id: string, b: string): string {
            const r = Bun.spawnSync(
              [mode.shim, "-namespace", env.cd.namespace, "-address", env.cd.address, "-publish-binary", c.binary, "-id", id, "start"],
              {
                cwd: b,
                env: { ...(process.env as Record<string, string>), TTRPC_ADDRESS: env.cd.ttrpcAddress, ...daemon.env },
                stdin: "ignore",
                stdout: "pipe",
                stderr: "pipe",
              },
            );
            if (r.exitCode !== 0) throw new Error(`start ${id}: ${r.stderr}`);
            return r.stdout.toString();
          }

          const swaps: { name: string; swap: (file: string) => void; says: string }[] = [
            {
              name: "a symlink to /dev/zero",
              swap: (f) => symlinkSync("/dev/zero", f),
              // Resolved inside the module's view, where /dev is the image's (here: none).
              says: "/app.wasm: no such file",
            },
            {
              name: "a fifo",
              swap: (f) => {
                const m = Bun.spawnSync(["mkfifo", f]);
                if (m.exitCode !== 0) throw new Error(`mkfifo: ${m.stderr.toString()}`);
              },
              says: "/app.wasm: a fifo, not a module file",
            },
            {
              name: "a sparse file of 1 GiB",
              swap: (f) => {
                const m = Bun.spawnSync(["truncate", "-s", "1G", f]);
                if (m.exitCode !== 0) throw new Error(`truncate: ${m.stderr.toString()}`);
              },
              says: "/app.wasm: 1073741824 bytes, more than a module may have (268435456)",
            },
          ];
          for (const s of swaps) {
            test(
              `${s.name}: Start fails saying what the file is now, and the next pod runs`,
              async () => {
                const id = uid("swap");
                const b = bundle(id);
                const address = shimStart(id, b);
                const client = await Client.connect(socketPath(address));
                const task = client.service(TaskV2);
                const err = join(dir, `${id}.err`);
                try {
                  await task.create({
                    id,
                    bundle: b,
                    rootfs: [],
                    terminal: false,
                    stdin: "",
                    stdout: `file://${join(dir, `${id}.out`)}`,
                    stderr: `file://${err}`,
                    checkpoint: "",
                    parentCheckpoint: "",
                    options: undefined,
                  });
                  // Between Create and Start, the file is something else.
                  rmSync(join(b, "rootfs/app.wasm"));
                  s.swap(join(b, "rootfs/app.wasm"));
                  const waited = task.wait({ id, execId: "" });
                  const started = await task.start({ id, execId: "" }).then(
                    () => undefined,
                    (e: unknown) => e,
                  );
                  if (mode.shared) {
                    // The daemon: Start itself fails, with what the file is now.
                    expect(started).toBeInstanceOf(TtrpcError);
                    expect((started as TtrpcError).message).toContain(s.says);
                    await task.kill({ id, execId: "", signal: 9, all: false }).catch(() => {});
                  } else {
                    // runc started the executor, which fails before running anything: 125, and why.
                    expect(started).toBeUndefined();
                    expect((await waited).exitStatus).toBe(125);
                    expect(readFileSync(err, "utf8")).toContain(s.says);
                  }
                  await waited;
                  await task.delete({ id, execId: "" });
                  await task.shutdown({ id, now: false }).catch(() => {});
                } finally {
                  client.close();
                }
                // The daemon (or the node) goes on serving another pod.
                const next = await env.run(IMAGES.demo, uid("next"), ["/wasi-demo-app.wasm", "echo", "next"], {
                  runtime: mode.runtime,
                  timeoutMs: 60_000,
                });
                expect({ code: next.code, out: next.stdout, err: next.stderr }).toEqual({ code: 0, out: "next\nexiting\n", err: "" });
              },
              T,
            );
          }
        });
      });
    }
  });
}
