// ctr as the e2e suites drive tasks: calls that must succeed, `ctr task ls` as a map,
// waiting for a status, detached runs whose output goes to a file, and the Update containerd
// sends a task's shim for CRI (ctr has no command for it).

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { socketPath } from "../../src/common/address.ts";
import { TaskDefinition } from "../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Client } from "../../src/ttrpc/index.ts";
import type { Containerd } from "./containerd.ts";
import { IMAGES, RUNTIME } from "./shim-env.ts";

/** The type URL of an Update's resources (an OCI LinuxResources in JSON), as containerd sends it. */
export const LINUX_RESOURCES = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export const fileText = (p: string) => (existsSync(p) ? readFileSync(p, "utf8") : "");

/** Polls a file until `pred` holds; true if it did within the time. */
export async function waitFile(p: string, pred: (t: string) => boolean, timeoutMs = 30_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (pred(fileText(p))) return true;
    await sleep(20);
  }
  return pred(fileText(p));
}

/** Helpers bound to a containerd and a folder for logs, both looked up when called. */
export function ctrTasks(cd: () => Containerd, logDir: () => string) {
  async function ctrOk(args: string[], timeoutMs = 30_000): Promise<string> {
    const r = await cd().ctr(args, { timeoutMs });
    if (r.code !== 0) throw new Error(`ctr ${args.join(" ")} → ${r.code}: ${r.stderr.trim()}\n${cd().logTail(30)}`);
    return r.stdout;
  }

  /** `ctr task ls` as id → {pid, status}. */
  async function tasks(): Promise<Map<string, { pid: number; status: string }>> {
    const m = new Map<string, { pid: number; status: string }>();
    for (const line of (await ctrOk(["task", "ls"])).split("\n").slice(1)) {
      const [id, pid, status] = line.trim().split(/\s+/);
      if (id && pid && status) m.set(id, { pid: Number(pid), status });
    }
    return m;
  }

  /** Polls `ctr task ls` until id has status; returns how long it took (ms). */
  async function waitStatus(id: string, status: string, timeoutMs = 30_000): Promise<number> {
    const t0 = performance.now();
    const deadline = Date.now() + timeoutMs;
    let last: string | undefined;
    while (Date.now() < deadline) {
      last = (await tasks()).get(id)?.status;
      if (last === status) return performance.now() - t0;
      await sleep(10);
    }
    throw new Error(`task ${id}: status ${last ?? "(absent)"} after ${timeoutMs} ms, wanted ${status}\n${cd().logTail(30)}`);
  }

  /** `ctr task delete ID`: ctr reports a non-zero exit status only as a warning; this returns it. */
  async function deleteTask(id: string): Promise<number> {
    const r = await cd().ctr(["task", "delete", id]);
    if (r.code !== 0) throw new Error(`ctr task delete ${id} → ${r.code}: ${r.stderr.trim()}`);
    const m = /exit with non-zero exit code (\d+)/.exec(r.stderr);
    return m ? Number(m[1]) : 0;
  }

  /** A container gone whole: its task SIGKILLed, waited for (STOPPED), deleted, then the container removed. */
  async function killAndRemove(id: string, timeoutMs = 30_000): Promise<void> {
    await ctrOk(["task", "kill", "-s", "SIGKILL", id]);
    await waitStatus(id, "STOPPED", timeoutMs);
    await deleteTask(id);
    await ctrOk(["container", "rm", id]);
  }

  /** `ctr run -d` with stdout+stderr to a file (a detached ctr leaves no reader on a fifo); `extra`: ctr flags before the image. */
  async function runDetached(
    id: string,
    args: string[] = [],
    image: string = IMAGES.demo,
    runtime: string = RUNTIME,
    extra: string[] = [],
  ): Promise<string> {
    const log = join(logDir(), `${id}.log`);
    await ctrOk(["run", "-d", "--runtime", runtime, "--log-uri", `file://${log}`, ...extra, image, id, ...args]);
    return log;
  }

  /** Sends an Update to the task's shim (or sandbox) over ttrpc, as containerd does for CRI's UpdateContainerResources. */
  async function update(id: string, resources: object): Promise<void> {
    const address = readFileSync(join(cd().state, "io.containerd.runtime.v2.task", cd().namespace, id, "address"), "utf8").trim();
    const client = await Client.connect(socketPath(address), { timeoutMs: 10_000 });
    try {
      await client.service(TaskDefinition).update({
        id,
        resources: { typeUrl: LINUX_RESOURCES, value: new TextEncoder().encode(JSON.stringify(resources)) },
        annotations: {},
      });
    } finally {
      client.close();
    }
  }

  return { ctrOk, tasks, waitStatus, deleteTask, killAndRemove, runDetached, update };
}
