// Exec and terminals against the real containerd (Debian's 1.6) through real `ctr`: `ctr task
// exec` into a running wasm container (the exec'd module runs through our executor, inside the
// container) and into a native busybox one, exit codes, stdout, stdin, Kill of an exec,
// duplicate exec ids, the exec events, `ctr run -t` and `ctr task exec -t` through a pty (ctr wants a terminal
// of its own: it runs under `script`), the window size ctr sends (ResizePty), and that nothing
// of an exec is left once it is deleted. Needs root (CI is root).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Containerd } from "../support/containerd.ts";
import { ctrTasks, sleep, waitFile } from "../support/ctr-tasks.ts";
import { IMAGES, RUNTIME, type ShimEnv, shimEnv } from "../support/shim-env.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && existsSync("/usr/bin/ctr") && existsSync("/usr/bin/script");

test("prerequisites: root, containerd, runc, script", () => expect(canRun).toBe(true));
const SHIM = "containerd-shim-wasmtime-v1";
const T = 90_000;
const VERSE = "This is a song that never ends.";

describe("exec and terminals (ctr + containerd 1.6 + compiled shim)", () => {
  let env: ShimEnv;
  let cd: Containerd;

  beforeAll(async () => {
    env = await shimEnv();
    cd = env.cd;
  }, 240_000);

  afterAll(async () => {
    await env?.stop();
  }, T);

  const { ctrOk, tasks, waitStatus, deleteTask, runDetached } = ctrTasks(
    () => cd,
    () => env.dir,
  );

  /** `ctr task exec` without a terminal: its exit code and output. */
  const exec = (id: string, execId: string, args: string[], stdin?: string) =>
    cd.ctr(["task", "exec", "--exec-id", execId, id, ...args], { timeoutMs: 60_000, ...(stdin !== undefined ? { stdin } : {}) });

  /** Runs ctr with a terminal of its own (util-linux `script` makes the pty); `input` is typed into it. */
  async function ctrInPty(args: string[], input: string, opts: { rows?: number; cols?: number } = {}) {
    const argv = cd.ctrArgv(args).map(shellQuote).join(" ");
    const size = opts.rows ? `stty rows ${opts.rows} cols ${opts.cols}; ` : "";
    const p = Bun.spawn(["script", "-qefc", `${size}exec ${argv}`, "/dev/null"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    p.stdin.write(input);
    p.stdin.flush();
    const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(timer);
    p.stdin.end();
    return { code, out, err };
  }

  function shimPidOf(id: string): number {
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      let c = "";
      try {
        c = readFileSync(`/proc/${d}/cmdline`, "utf8").replace(/\0/g, " ");
      } catch {
        continue;
      }
      if (c.includes(SHIM) && c.includes(` -address ${cd.address} `) && c.includes(`-id ${id} `) && / serve\s*$/.test(c)) return Number(d);
    }
    throw new Error(`no shim server for ${id}`);
  }

  /** The shim's open fds, by what they are (pty masters, fifos, sockets...). */
  function fdKinds(pid: number): string[] {
    const out: string[] = [];
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        out.push(readlinkQuiet(`/proc/${pid}/fd/${fd}`));
      } catch {} // closed while we looked
    }
    return out.sort();
  }

  /** Processes whose parent is `pid`. */
  function childrenOf(pid: number): number[] {
    const out: number[] = [];
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const st = readFileSync(`/proc/${d}/stat`, "utf8");
        if (Number(st.slice(st.lastIndexOf(")") + 2).split(" ")[1]) === pid) out.push(Number(d));
      } catch {} // gone while we looked
    }
    return out.sort((a, b) => a - b);
  }

  const consoleDirs = () => readdirSync(tmpdir()).filter((n) => n.startsWith("bunwasi-pty-"));

  test(
    "wasm container: exec of a module runs inside it; stdout captured, exit code propagated",
    async () => {
      const id = "ex-wasm";
      const log = await runDetached(id);
      expect(await waitFile(log, (t) => t.includes(VERSE), 30_000)).toBe(true);
      const shim = shimPidOf(id);
      const fdsBefore = fdKinds(shim);
      const childrenBefore = childrenOf(shim);

      const hi = await exec(id, "e-echo", ["/wasi-demo-app.wasm", "echo", "hi from exec"]);
      expect(hi).toMatchObject({ code: 0, stdout: "hi from exec\nexiting\n" });
      // The module's exit code comes back as the exec's (the demo app's `exit N`).
      const three = await exec(id, "e-exit", ["/wasi-demo-app.wasm", "exit", "3"]);
      expect(three.code).toBe(3);
      // The container was never disturbed.
      expect((await tasks()).get(id)?.status).toBe("RUNNING");
      // Nothing of the execs is left in the shim: processes, fds, console sockets.
      expect(childrenOf(shim)).toEqual(childrenBefore);
      expect(fdKinds(shim)).toEqual(fdsBefore);
      await ctrOk(["task", "kill", "-s", "SIGKILL", id]);
      await waitStatus(id, "STOPPED");
      expect(await deleteTask(id)).toBe(137);
      await ctrOk(["container", "rm", id]);
    },
    T,
  );

  test(
    "wasm container: exec with stdin (cat.wasm), the container's env and rootfs, Kill of a wasm exec",
    async () => {
      const id = "ex-wasm-in";
      await runDetached(id, ["/wasi-demo-app.wasm"], IMAGES.tools);
      await waitStatus(id, "RUNNING");
      const cat = await exec(id, "e-cat", ["/cat.wasm"], "line one\nline two\n");
      expect(cat).toMatchObject({ code: 0, stdout: "line one\nline two\n" });
      // The process ctr sends carries the container's env (the image's PATH=/).
      const envOut = await exec(id, "e-env", ["/env.wasm", "x"]);
      expect(envOut.stdout).toContain("arg[1]=x\n");
      expect(envOut.stdout).toContain("env:PATH=/\n");
      // "/" of the exec is the container's rootfs: what it writes is in the bundle's rootfs.
      const w = await exec(id, "e-write", ["/wasi-demo-app.wasm", "write", "/tmp/from-exec.txt", "written inside"]);
      expect(w.code).toBe(0);
      const inRootfs = join(cd.state, "io.containerd.runtime.v2.task", cd.namespace, id, "rootfs/tmp/from-exec.txt");
      expect(readFileSync(inRootfs, "utf8")).toBe("written inside");
      // Kill of a module exec: SIGTERM ends the executor, ctr task exec reports 143.
      const sleeper = cd.ctrSpawn(["task", "exec", "--exec-id", "e-sleep", id, "/wasi-demo-app.wasm", "sleep", "60"]);
      await waitForExec(id, "e-sleep");
      await ctrOk(["task", "kill", "--exec-id", "e-sleep", id]);
      expect(await sleeper.exited).toBe(143);
      expect((await tasks()).get(id)?.status).toBe("RUNNING");
      await ctrOk(["task", "kill", "-s", "SIGKILL", id]);
      await waitStatus(id, "STOPPED");
      await deleteTask(id);
      await ctrOk(["container", "rm", id]);
    },
    T,
  );

  test(
    "native busybox container: exec runs in its pid namespace; exit code 3; a duplicate exec id is refused",
    async () => {
      const id = "ex-native";
      await runDetached(id, ["sleep", "1000"], IMAGES.busybox);
      await waitStatus(id, "RUNNING");
      const shim = shimPidOf(id);
      const fdsBefore = fdKinds(shim);
      const r = await exec(id, "e-sh", ["sh", "-c", "echo $$; exit 3"]);
      expect(r.code).toBe(3);
      // A pid of the container's own pid namespace (sleep is 1 there).
      const pid = Number(r.stdout.trim());
      expect(pid).toBeGreaterThan(1);
      expect(pid).toBeLessThan(100);

      // The same exec id twice at once: the second is refused while the first still runs.
      const first = cd.ctrSpawn(["task", "exec", "--exec-id", "dup", id, "sleep", "30"]);
      await waitForExec(id, "dup");
      const second = await exec(id, "dup", ["true"]);
      expect(second.code).not.toBe(0);
      expect(second.stderr).toContain("already exists");

      // Kill of that exec: ctr task kill --exec-id; its ctr task exec ends with 137.
      await ctrOk(["task", "kill", "--exec-id", "dup", "-s", "SIGKILL", id]);
      expect(await first.exited).toBe(137);
      expect((await tasks()).get(id)?.status).toBe("RUNNING");
      expect(fdKinds(shim)).toEqual(fdsBefore);
      await ctrOk(["task", "kill", "-s", "SIGKILL", id]);
      await waitStatus(id, "STOPPED");
      // Nothing to run a process in once the init has exited.
      const late = await exec(id, "e-late", ["true"]);
      expect(late.code).not.toBe(0);
      expect(late.stderr).toContain("cannot exec in a stopped container");
      await deleteTask(id);
      await ctrOk(["container", "rm", id]);
    },
    T,
  );

  /** Polls `ctr task ps` until the exec shows up among the container's processes. */
  async function waitForExec(id: string, execId: string): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const ps = await cd.ctr(["task", "ps", id]);
      if (ps.stdout.includes(execId)) return;
      await sleep(50);
    }
    throw new Error(`exec ${execId} never showed in ctr task ps ${id}`);
  }

  test(
    "ctr events: /tasks/exec-added, /tasks/exec-started, /tasks/exit with the exec id; the init's exit last",
    async () => {
      const ev = cd.ctrSpawn(["events"]);
      const out = new Collector(ev.stdout);
      try {
        // ctr events is subscribed once an event of ours shows up in it.
        let synced = false;
        for (let i = 0; i < 100 && !synced; i++) {
          await ctrOk(["namespaces", "label", cd.namespace, `ex-sync=${i}`]);
          synced = await out.waitFor((t) => t.includes("/namespaces/update"), 100);
        }
        expect(synced).toBe(true);
        const id = "ex-events";
        await runDetached(id, ["sleep", "1000"], IMAGES.busybox);
        await waitStatus(id, "RUNNING");
        expect((await exec(id, "ev1", ["sh", "-c", "exit 2"])).code).toBe(2);
        // An exec still running when the task is killed: its exit is published before the init's.
        const long = cd.ctrSpawn(["task", "exec", "--exec-id", "ev2", id, "sleep", "1000"]);
        await waitForExec(id, "ev2");
        await ctrOk(["task", "kill", "-s", "SIGKILL", id]);
        await long.exited;
        await waitStatus(id, "STOPPED");
        await deleteTask(id);
        const mine = () =>
          out.text
            .split("\n")
            .filter((l) => l.includes(`"${id}"`))
            .map((l) => ({ topic: l.split(" ").find((w) => w.startsWith("/")) ?? "", line: l }));
        expect(await out.waitFor(() => mine().some((e) => e.topic === "/tasks/delete"), 30_000)).toBe(true);
        const events = mine().filter((e) => e.topic.startsWith("/tasks/"));
        expect(events.map((e) => e.topic)).toEqual([
          "/tasks/create",
          "/tasks/start",
          "/tasks/exec-added",
          "/tasks/exec-started",
          "/tasks/exit",
          "/tasks/exec-added",
          "/tasks/exec-started",
          "/tasks/exit",
          "/tasks/exit",
          "/tasks/delete",
        ]);
        const lines = events.map((e) => e.line);
        expect(lines[2]).toContain('"exec_id":"ev1"');
        expect(lines[3]).toContain('"exec_id":"ev1"');
        expect(lines[4]).toContain('"id":"ev1"');
        expect(lines[4]).toContain('"exit_status":2');
        expect(lines[7]).toContain('"id":"ev2"');
        expect(lines[7]).toContain('"exit_status":137');
        expect(lines[8]).toContain(`"id":"${id}"`);
        await ctrOk(["container", "rm", id]);
      } finally {
        ev.kill();
        await ev.exited;
        await cd.ctr(["namespaces", "label", cd.namespace, "ex-sync="]);
      }
    },
    T,
  );

  test(
    "ctr run -t: busybox sh through a pty (input, output, exit code); the window size ctr sends arrives",
    async () => {
      const id = "ex-tty";
      const r = await ctrInPty(
        ["run", "--rm", "-t", "--runtime", RUNTIME, IMAGES.busybox, id, "sh"],
        // Waits for ctr's ResizePty (the size starts 0x0), then prints it; exit 7 ends ctr.
        // (busybox stty prints no size for a 0x0 window, until ctr's ResizePty sets one)
        `until [ -n "$(stty size 2>/dev/null)" ]; do sleep 0.05; done; echo "size=$(stty size) tty=$(tty)"; exit 7\n`,
        { rows: 33, cols: 91 },
      );
      expect(r.out).toContain("size=33 91 tty=/dev/pts/0");
      expect(r.code).toBe(7);
      expect((await tasks()).has(id)).toBe(false);
      expect(consoleDirs()).toEqual([]);

      // A wasm container with a terminal: the executor's stdio is the pty slave.
      const w = await ctrInPty(
        ["run", "--rm", "-t", "--runtime", RUNTIME, IMAGES.demo, "ex-tty-wasm-run", "/wasi-demo-app.wasm", "exit", "4"],
        "",
      );
      expect(w.code).toBe(4);
      const e = await ctrInPty(
        ["run", "--rm", "-t", "--runtime", RUNTIME, IMAGES.demo, "ex-tty-wasm-echo", "/wasi-demo-app.wasm", "echo", "tty run"],
        "",
      );
      expect(e.out).toContain("tty run\r\r\nexiting\r\r\n");
      expect(e.code).toBe(0);
      expect(consoleDirs()).toEqual([]);
    },
    T,
  );

  test(
    "ctr task exec -t into busybox and into a wasm container; after Delete no console socket or pty is left",
    async () => {
      const id = "ex-tty-exec";
      await runDetached(id, ["sleep", "1000"], IMAGES.busybox);
      await waitStatus(id, "RUNNING");
      const shim = shimPidOf(id);
      const fdsBefore = fdKinds(shim);
      const r = await ctrInPty(
        ["task", "exec", "-t", "--exec-id", "t1", id, "sh"],
        `until [ -n "$(stty size 2>/dev/null)" ]; do sleep 0.05; done; echo "exec size=$(stty size)"; exit 5\n`,
        { rows: 40, cols: 100 },
      );
      expect(r.out).toContain("exec size=40 100");
      expect(r.code).toBe(5);
      expect(fdKinds(shim)).toEqual(fdsBefore);
      expect(consoleDirs()).toEqual([]);
      await ctrOk(["task", "kill", "-s", "SIGKILL", id]);
      await waitStatus(id, "STOPPED");
      await deleteTask(id);
      await ctrOk(["container", "rm", id]);

      const w = "ex-tty-wasm";
      const log = await runDetached(w);
      expect(await waitFile(log, (t) => t.includes(VERSE), 30_000)).toBe(true);
      const wr = await ctrInPty(["task", "exec", "-t", "--exec-id", "t2", w, "/wasi-demo-app.wasm", "echo", "hello tty"], "");
      // Through our pty's line discipline (\n → \r\n), then ctr's own under script (→ \r\r\n).
      expect(wr.out).toContain("hello tty\r\r\nexiting\r\r\n");
      expect(wr.code).toBe(0);
      await ctrOk(["task", "kill", "-s", "SIGKILL", w]);
      await waitStatus(w, "STOPPED");
      await deleteTask(w);
      await ctrOk(["container", "rm", w]);
      expect(consoleDirs()).toEqual([]);
    },
    T,
  );
});

/** Accumulates a stream's text in the background; waitFor polls it. */
class Collector {
  text = "";
  constructor(stream: ReadableStream<Uint8Array>) {
    void this.pump(stream);
  }
  private async pump(stream: ReadableStream<Uint8Array>) {
    const dec = new TextDecoder();
    try {
      for await (const chunk of stream) this.text += dec.decode(chunk, { stream: true });
    } catch {} // ctr killed at the end of the test: what it printed is all there is
  }
  async waitFor(pred: (text: string) => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (pred(this.text)) return true;
      await sleep(10);
    }
    return pred(this.text);
  }
}

function readlinkQuiet(p: string): string {
  return require("node:fs").readlinkSync(p) as string;
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
