// Exec calls ctr does not make the way a kubelet does, driven directly over ttrpc (as
// containerd's CRI plugin would) against the compiled shim: a terminal exec resized twice
// (the process sees each size), CloseIO of a terminal exec (a hangup at EOF) and of a plain one, State and
// Delete of an exec. containerd only receives the events. Needs root and runc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  closeSync,
  constants,
  copyFileSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { Spec } from "../../src/oci/spec.ts";
import { socketPath } from "../../src/runtime-v2/address.ts";
import { type ExecProcessRequest, TaskDefinition } from "../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Status } from "../../src/task/gen/containerd/types/task/task.ts";
import { Client } from "../../src/ttrpc/index.ts";
import { sleep } from "../support/ctr-tasks.ts";
import { REPO, type ShimEnv, shimEnv } from "../support/shim-env.ts";

const SHIM = join(REPO, "build/bin/containerd-shim-wasmtime-v1");
const T = 60_000;

describe("exec over ttrpc: ResizePty, CloseIO, State, Delete", () => {
  let env: ShimEnv;
  let client: Client;
  const id = `xt-${process.pid}`;
  let dir = "";

  function fifo(name: string): string {
    const p = join(dir, name);
    if (Bun.spawnSync(["mkfifo", p]).exitCode !== 0) throw new Error(`mkfifo ${p}`);
    return p;
  }

  /** Reads a non-blocking fifo until `pred` holds for what arrived (20 s at most). */
  async function readUntil(fd: number, pred: (t: string) => boolean): Promise<string> {
    let text = "";
    const buf = Buffer.alloc(4096);
    const deadline = Date.now() + 20_000;
    while (!pred(text) && Date.now() < deadline) {
      try {
        const n = readSync(fd, buf, 0, buf.length, null);
        if (n > 0) text += buf.toString("utf8", 0, n);
        else await sleep(10);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
        await sleep(10);
      }
    }
    return text;
  }

  /** Polls a non-blocking fifo until a read says EOF (no writer left); false after 20 s. */
  async function untilEof(fd: number): Promise<boolean> {
    const buf = Buffer.alloc(4096);
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      try {
        if (readSync(fd, buf, 0, buf.length, null) === 0) return true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
      }
      await sleep(10);
    }
    return false;
  }

  const processSpec = (args: string[], terminal: boolean) => ({
    typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process",
    value: new TextEncoder().encode(
      JSON.stringify({ args, terminal, cwd: "/", env: ["PATH=/bin", "TERM=xterm"], user: { uid: 0, gid: 0 } }),
    ),
  });

  beforeAll(async () => {
    env = await shimEnv();
    dir = join(env.dir, "xt");
    const bundle = join(dir, "bundle");
    mkdirSync(join(bundle, "rootfs/bin"), { recursive: true });
    copyFileSync("/bin/busybox", join(bundle, "rootfs/bin/busybox"));
    for (const a of ["sh", "sleep", "stty", "cat"]) symlinkSync("busybox", join(bundle, `rootfs/bin/${a}`));
    if (Bun.spawnSync(["runc", "spec"], { cwd: bundle }).exitCode !== 0) throw new Error("runc spec");
    const spec = JSON.parse(readFileSync(join(bundle, "config.json"), "utf8")) as Spec;
    spec.process.terminal = false;
    spec.process.args = ["sleep", "1000"];
    spec.root = { path: "rootfs", readonly: false };
    writeFileSync(join(bundle, "config.json"), JSON.stringify(spec));
    const r = Bun.spawnSync(
      [SHIM, "-namespace", env.cd.namespace, "-address", env.cd.address, "-publish-binary", "/usr/bin/containerd", "-id", id, "start"],
      {
        cwd: bundle,
        env: { ...(process.env as Record<string, string>), TTRPC_ADDRESS: env.cd.ttrpcAddress },
        stdout: "pipe",
        stderr: "pipe",
      },
    );
    if (r.exitCode !== 0) throw new Error(`start: ${r.stderr}`);
    client = await Client.connect(socketPath(r.stdout.toString().trim()));
    const t = client.service(TaskDefinition);
    await t.create({
      id,
      bundle,
      rootfs: [],
      terminal: false,
      stdin: "",
      stdout: "",
      stderr: "",
      checkpoint: "",
      parentCheckpoint: "",
      options: undefined,
    });
    await t.start({ id, execId: "" });
  }, 240_000);

  afterAll(async () => {
    if (client) {
      const t = client.service(TaskDefinition);
      await t.kill({ id, execId: "", signal: 9, all: true }).catch(() => {});
      await t.wait({ id, execId: "" }).catch(() => {});
      await t.delete({ id, execId: "" }).catch(() => {});
      await t.shutdown({ id, now: true }).catch(() => {});
      client.close();
    }
    await env?.stop();
  }, T);

  test(
    "a terminal exec: each ResizePty is the size the shell sees; CloseIO then EOF hangs it up; its exit through Wait and Delete",
    async () => {
      const t = client.service(TaskDefinition);
      const stdin = fifo("t-in");
      const stdout = fifo("t-out");
      const out = openSync(stdout, constants.O_RDONLY | constants.O_NONBLOCK);
      const req: ExecProcessRequest = { id, execId: "tty", terminal: true, stdin, stdout, stderr: "", spec: processSpec(["sh"], true) };
      await t.exec(req);
      expect((await t.state({ id, execId: "tty" })).status).toBe(Status.CREATED);
      const { pid } = await t.start({ id, execId: "tty" });
      expect(pid).toBeGreaterThan(0);
      const st = await t.state({ id, execId: "tty" });
      expect(st).toMatchObject({ id: "tty", execId: "tty", status: Status.RUNNING, terminal: true, pid, stdin, stdout });
      const input = openSync(stdin, constants.O_WRONLY | constants.O_NONBLOCK);

      await t.resizePty({ id, execId: "tty", width: 100, height: 30 });
      writeSync(input, "echo A=$(stty size)\n");
      expect(await readUntil(out, (x) => x.includes("A=30 100"))).toContain("A=30 100");
      await t.resizePty({ id, execId: "tty", width: 51, height: 19 });
      writeSync(input, "echo B=$(stty size)\n");
      expect(await readUntil(out, (x) => x.includes("B=19 51"))).toContain("B=19 51");

      // CloseIO lets go of our hold on stdin; once the client's writer is gone too, stdin is at
      // EOF and the terminal is hung up, as under runc-v2: the shell gets SIGHUP (128+1).
      await t.closeIO({ id, execId: "tty", stdin: true });
      closeSync(input);
      expect(await t.wait({ id, execId: "tty" })).toMatchObject({ exitStatus: 129 });
      // Our copy of the output let go of containerd's fifo: EOF there.
      expect(await untilEof(out)).toBe(true);
      const del = await t.delete({ id, execId: "tty" });
      expect(del).toMatchObject({ pid, exitStatus: 129 });
      expect(await t.state({ id, execId: "tty" }).catch((e: Error) => e.message)).toContain("does not exist");
      closeSync(out);
    },
    T,
  );

  test(
    "a plain exec reads stdin to EOF once the client closes its writer (CloseIO has nothing of ours to close)",
    async () => {
      const t = client.service(TaskDefinition);
      const stdin = fifo("p-in");
      const stdout = fifo("p-out");
      const out = openSync(stdout, constants.O_RDONLY | constants.O_NONBLOCK);
      // containerd opens its writer before Start; so does this test (a reader must exist: ours).
      const keep = openSync(stdin, constants.O_RDWR);
      await t.exec({ id, execId: "cat", terminal: false, stdin, stdout, stderr: "", spec: processSpec(["cat"], false) });
      await t.start({ id, execId: "cat" });
      const input = openSync(stdin, constants.O_WRONLY);
      closeSync(keep);
      writeSync(input, "through the fifo\n");
      expect(await readUntil(out, (x) => x.includes("through the fifo\n"))).toBe("through the fifo\n");
      await t.closeIO({ id, execId: "cat", stdin: true });
      closeSync(input);
      expect(await t.wait({ id, execId: "cat" })).toMatchObject({ exitStatus: 0 });
      await t.delete({ id, execId: "cat" });
      closeSync(out);
    },
    T,
  );
});
