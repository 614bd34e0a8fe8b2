// Attacks on a container's cpuset (linux.resources.cpu.cpus and .mems: what kubelet's static
// CPU manager gives a pod of exclusive CPUs), in both modes, on a private containerd of each
// version (Debian's 1.6 and the pinned 2.x): normal mode (io.containerd.wasmtime.v1: the
// executor under runc, in the container's cpuset cgroup) and shared mode
// (io.containerd.wasmtimed.v1: a thread of the daemon this file starts). Whatever runc denies a
// native container, the daemon may not grant a wasm one.
//  - A busy module with cpus "1" runs on a thread allowed CPU 1 only (normal: the executor's
//    Cpus_allowed_list; shared: a daemon thread's, spinning, that the daemon's log ties to the
//    container), and nothing so confined is left after its delete. Before: shared mode dropped
//    the cpuset, every daemon thread still allowed on every CPU (0-1 on a 2-core machine).
//  - An Update to cpus "0" moves that very thread (shared: the same tid); a pooled run (shared,
//    no cpuset at create) cannot leave its pool: the narrowing Update is refused and nothing of
//    the daemon is confined; normal mode moves its executor.
//  - An exec into such a container is confined the same way (shared: a second thread on CPU 1,
//    spinning, that the log ties to the exec; normal: the exec's process, in the cgroup).
//  - A wasi:http service with cpus "1": every thread serving it is confined (shared: each of the
//    daemon's threads the http library names for it), and an Update moves them all. Before: shared
//    mode refused to start it (125).
//  - cpus naming no CPU of the node, or mems naming no memory node of it, fail the Create in
//    both modes (runc's write into the cgroup fails). Before: shared mode ran it.
// ctr 1.6 has no --cpuset-cpus: there the spec is given with --config. Needs root, containerd
// and runc, and at least two CPUs. No assertion depends on timing (waits are liveness only).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { writeImageArchive } from "../../tools/image/index.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { ctrTasks } from "../support/ctr-tasks.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { RUNTIME, type ShimEnv, WASM } from "../support/shim-env.ts";
import { until as waitUntil } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc, two CPUs", () => {
  expect(canRun).toBe(true);
  expect(availableParallelism()).toBeGreaterThanOrEqual(2);
});

const T = 120_000;
const IMAGE = "docker.io/library/bunwasi-attack-cpuset:latest";
let seq = 0;
const uid = (what: string) => `acs-${what}-${process.pid}-${seq++}`;

/** Liveness only (fail instead of hang), never a bound on how fast anything is. */
const until = <T>(what: string, f: () => T | Promise<T>, timeoutMs = 60_000) => waitUntil(what, f, timeoutMs, 50);

/** A /proc status file's Cpus_allowed_list, or undefined once the task is gone. */
function cpusAllowed(statusPath: string): string | undefined {
  try {
    return /^Cpus_allowed_list:\s*(.*)$/m.exec(readFileSync(statusPath, "utf8"))?.[1];
  } catch {
    return undefined;
  }
}

/** The daemon's threads as tid → Cpus_allowed_list. */
function daemonThreads(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    const cpus = cpusAllowed(`/proc/${pid}/task/${t}/status`);
    if (cpus !== undefined) out.set(Number(t), cpus);
  }
  return out;
}

/** A thread's user + system ticks so far (/proc/PID/task/TID/stat fields 14 and 15). */
function threadTicks(pid: number, tid: number): number {
  const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]);
}

for (const c of CONTAINERDS) {
  describe(`cpuset in both modes, containerd ${c.name}`, () => {
    let shared: SharedEnv | undefined;
    let dir: string;
    let daemon: Daemon;
    let env: ShimEnv;
    let baseSpec: Record<string, unknown>;
    let rootfs: string;
    const hasCpusetFlag = c.name !== "1.6";

    beforeAll(async () => {
      shared = await sharedEnv({ prefix: "/tmp/bwcs-", containerd: { binary: c.binary } });
      ({ dir, daemon, env } = shared);
      const archive = join(dir, "attack.tar");
      writeImageArchive(archive, {
        name: IMAGE,
        files: [
          { path: "/busy.wasm", source: join(WASM, "busy.wasm") },
          { path: "/handler.wasm", source: join(WASM, "http", "handler.wasm") },
        ],
        config: { entrypoint: ["/busy.wasm"] },
      });
      const r = await env.cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import: ${r.stderr}`);
      if (!hasCpusetFlag) {
        baseSpec = JSON.parse(await tasks.ctrOk(["oci", "spec"]));
        rootfs = join(dir, "rootfs");
        mkdirSync(rootfs);
        copyFileSync(join(WASM, "busy.wasm"), join(rootfs, "busy.wasm"));
        copyFileSync(join(WASM, "http", "handler.wasm"), join(rootfs, "handler.wasm"));
      }
    }, 300_000);

    afterAll(async () => {
      await shared?.stop();
    }, T);

    const tasks = ctrTasks(
      () => env.cd,
      () => dir,
    );

    /**
     * `ctr run -d` of /busy.wasm with this cpuset, stdout and stderr to a file. ctr 1.6 has no
     * --cpuset-cpus: there the container is run from a spec of its own (--config), on a rootfs
     * directory of this test's holding the module.
     */
    function runBusy(runtime: string, id: string, cpuset: { cpus?: string; mems?: string }, service = false) {
      const log = ["--log-uri", `file://${join(dir, `${id}.log`)}`];
      // The wasi:http handler instead: a service, on a port of its own choosing.
      const ADDR = "WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:0";
      if (hasCpusetFlag) {
        const flags = [...(cpuset.cpus ? ["--cpuset-cpus", cpuset.cpus] : []), ...(cpuset.mems ? ["--cpuset-mems", cpuset.mems] : [])];
        const what = service ? ["--env", ADDR, IMAGE, id, "/handler.wasm"] : [IMAGE, id];
        return env.cd.ctr(["run", "-d", "--runtime", runtime, ...log, ...flags, ...what]);
      }
      const spec = structuredClone(baseSpec) as {
        process: { args: string[]; env?: string[]; terminal?: boolean };
        root: { path: string; readonly?: boolean };
        linux: { cgroupsPath?: string; resources?: { cpu?: Record<string, unknown> } };
      };
      spec.process.args = [service ? "/handler.wasm" : "/busy.wasm"];
      if (service) spec.process.env = [...(spec.process.env ?? []), ADDR];
      spec.process.terminal = false;
      spec.root = { path: rootfs, readonly: true };
      spec.linux.cgroupsPath = `/${env.cd.namespace}/${id}`;
      spec.linux.resources = { ...spec.linux.resources, cpu: { ...spec.linux.resources?.cpu, ...cpuset } };
      const path = join(dir, `${id}.json`);
      writeFileSync(path, JSON.stringify(spec));
      return env.cd.ctr(["run", "-d", "--runtime", runtime, ...log, "--config", path, id]);
    }

    async function runBusyOk(runtime: string, id: string, cpuset: { cpus?: string; mems?: string }, service = false): Promise<void> {
      const r = await runBusy(runtime, id, cpuset, service);
      if (r.code !== 0) throw new Error(`ctr run ${id} → ${r.code}: ${r.stderr.trim()}`);
    }

    const stop = (id: string) => tasks.killAndRemove(id);

    for (const mode of [
      { name: "normal", runtime: RUNTIME },
      { name: "shared", runtime: SHARED_RUNTIME },
    ] as const) {
      const isShared = mode.name === "shared";

      /** The thread that runs task `id`'s module, as a /proc status path (shared: found by its CPUs). */
      async function runThread(id: string, cpus: string): Promise<{ status: string; tid?: number }> {
        if (!isShared) {
          const pid = (await tasks.tasks()).get(id)?.pid;
          if (!pid) throw new Error(`task ${id} has no pid`);
          return { status: `/proc/${pid}/status` };
        }
        const tid = await until(`a daemon thread allowed CPU ${cpus} only`, () => {
          const found = [...daemonThreads(daemon.pid)].filter(([, l]) => l === cpus);
          return found.length === 1 ? found[0]?.[0] : undefined;
        });
        return { status: `/proc/${daemon.pid}/task/${tid}/status`, tid };
      }

      describe(`${mode.name} mode`, () => {
        test(
          'a busy module with cpus "1" runs on a thread allowed CPU 1 only; after delete nothing so confined is left',
          async () => {
            const id = uid("one");
            if (isShared) expect([...daemonThreads(daemon.pid).values()].filter((l) => l === "1")).toEqual([]);
            await runBusyOk(mode.runtime, id, { cpus: "1" });
            await tasks.waitStatus(id, "RUNNING");
            const t = await runThread(id, "1");
            expect(cpusAllowed(t.status)).toBe("1");
            if (t.tid !== undefined) {
              const tid = t.tid;
              // It is the spinning run: its CPU time grows; and the daemon says whose it is.
              const ticks = threadTicks(daemon.pid, tid);
              await until("the confined thread to spend CPU", () => threadTicks(daemon.pid, tid) > ticks);
              expect(daemon.log()).toContain(`${id}: runs on a thread of its own confined to CPUs 1`);
              // The figure (printed): the daemon's threads by Cpus_allowed_list while it runs.
              const byList = new Map<string, number>();
              for (const l of daemonThreads(daemon.pid).values()) byList.set(l, (byList.get(l) ?? 0) + 1);
              console.log(
                `shared, containerd ${c.name}: daemon threads by Cpus_allowed_list while a cpus "1" module runs: ${[...byList].map(([l, n]) => `${n} on ${l}`).join(", ")}`,
              );
            }
            await stop(id);
            if (isShared)
              await until("no daemon thread left allowed CPU 1 only", () => ![...daemonThreads(daemon.pid).values()].includes("1"));
          },
          T,
        );

        test(
          'an Update to cpus "0" moves the running module\'s thread to CPU 0',
          async () => {
            const id = uid("move");
            await runBusyOk(mode.runtime, id, { cpus: "1" });
            await tasks.waitStatus(id, "RUNNING");
            const t = await runThread(id, "1");
            await tasks.update(id, { cpu: { cpus: "0" } });
            // The same thread (shared: the same tid), now on CPU 0 only.
            expect(cpusAllowed(t.status)).toBe("0");
            await stop(id);
            if (isShared)
              await until("no daemon thread left allowed CPU 0 only", () => ![...daemonThreads(daemon.pid).values()].includes("0"));
          },
          T,
        );

        test(
          'an exec into a cpus "1" container runs on CPU 1 only too, beside the container\'s module',
          async () => {
            const id = uid("exec");
            await runBusyOk(mode.runtime, id, { cpus: "1" });
            await tasks.waitStatus(id, "RUNNING");
            const init = await runThread(id, "1");
            const exec = env.cd.ctrSpawn(["task", "exec", "--exec-id", "e-busy", id, "/busy.wasm"]);
            if (isShared) {
              // A second daemon thread allowed CPU 1 only, spinning: the exec's run.
              const tid = await until(
                "a second daemon thread allowed CPU 1 only",
                () => [...daemonThreads(daemon.pid)].find(([t, l]) => l === "1" && t !== init.tid)?.[0],
              );
              const ticks = threadTicks(daemon.pid, tid);
              await until("the exec's thread to spend CPU", () => threadTicks(daemon.pid, tid) > ticks);
              expect(daemon.log()).toContain(`${id}/e-busy: runs on a thread of its own confined to CPUs 1`);
            } else {
              // The exec's process (ctr task ps lists it by its exec id), in the container's cpuset.
              const pid = await until("the exec in ctr task ps", async () => {
                const line = (await tasks.ctrOk(["task", "ps", id])).split("\n").find((l) => l.includes("e-busy"));
                return line ? Number(line.trim().split(/\s+/)[0]) : undefined;
              });
              expect(cpusAllowed(`/proc/${pid}/status`)).toBe("1");
            }
            await tasks.ctrOk(["task", "kill", "--exec-id", "e-busy", "-s", "SIGKILL", id]);
            expect(await exec.exited).toBe(137);
            await stop(id);
            if (isShared)
              await until("no daemon thread left allowed CPU 1 only", () => ![...daemonThreads(daemon.pid).values()].includes("1"));
          },
          T,
        );

        test(
          'a wasi:http service with cpus "1": every thread that serves it is allowed CPU 1 only; an Update to "0" moves them all',
          async () => {
            const id = uid("http");
            await runBusyOk(mode.runtime, id, { cpus: "1" }, true);
            await tasks.waitStatus(id, "RUNNING");
            /** The threads that serve it, as Cpus_allowed_list (shared: the daemon's named by the http library). */
            const servers = async (): Promise<string[]> => {
              if (!isShared) {
                const pid = (await tasks.tasks()).get(id)?.pid;
                return readdirSync(`/proc/${pid}/task`).flatMap((t) => cpusAllowed(`/proc/${pid}/task/${t}/status`) ?? []);
              }
              return readdirSync(`/proc/${daemon.pid}/task`).flatMap((t) => {
                try {
                  if (!readFileSync(`/proc/${daemon.pid}/task/${t}/comm`, "utf8").startsWith("bunwasi-http-")) return [];
                } catch {
                  return [];
                }
                return cpusAllowed(`/proc/${daemon.pid}/task/${t}/status`) ?? [];
              });
            };
            // Serving: its threads are there (the accept loop, a worker, the ticker at least).
            const serving = await until("the service's threads", async () => ((await servers()).length >= 3 ? await servers() : undefined));
            expect(new Set(serving)).toEqual(new Set(["1"]));
            await tasks.update(id, { cpu: { cpus: "0" } });
            expect(new Set(await servers())).toEqual(new Set(["0"]));
            await stop(id);
            if (isShared) await until("no thread of the service left", async () => (await servers()).length === 0);
          },
          T,
        );

        test(
          "cpus naming no CPU of the node, or mems no memory node of it, fail the Create",
          async () => {
            const cpu = String(availableParallelism() + 4);
            for (const cpuset of [{ cpus: cpu }, { mems: "7" }]) {
              const id = uid("none");
              const r = await runBusy(mode.runtime, id, cpuset);
              expect(r.code).not.toBe(0);
              if (isShared) expect(r.stderr).toContain(cpuset.cpus ? `cpus "${cpu}" names no CPU` : 'mems "7" leaves out memory node');
              expect((await tasks.tasks()).has(id)).toBe(false);
              await env.cd.ctr(["container", "rm", id]);
            }
          },
          T,
        );

        if (isShared) {
          test(
            "a pooled run (no cpuset at create) cannot be confined: a narrowing Update is refused, nothing of the daemon is confined",
            async () => {
              const id = uid("pooled");
              await runBusyOk(mode.runtime, id, {});
              await tasks.waitStatus(id, "RUNNING");
              const before = daemonThreads(daemon.pid);
              await expect(tasks.update(id, { cpu: { cpus: "1" } })).rejects.toThrow(
                /cannot be confined to its cpuset alone; nothing was changed/,
              );
              const after = daemonThreads(daemon.pid);
              for (const [tid, cpus] of after) if (before.has(tid)) expect(cpus).toBe(before.get(tid) as string);
              expect([...after.values()].includes("1")).toBe(false);
              await stop(id);
              expect(daemon.log()).toContain(`${id}: ran on a run pool`);
            },
            T,
          );
        } else {
          test(
            'an Update to cpus "1" of a module started without a cpuset moves its executor (runc update)',
            async () => {
              const id = uid("runc-move");
              await runBusyOk(mode.runtime, id, {});
              await tasks.waitStatus(id, "RUNNING");
              const pid = (await tasks.tasks()).get(id)?.pid;
              await tasks.update(id, { cpu: { cpus: "1" } });
              expect(cpusAllowed(`/proc/${pid}/status`)).toBe("1");
              await stop(id);
            },
            T,
          );
        }
      });
    }
  });
}
