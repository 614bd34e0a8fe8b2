// A terminal (tty) for a wasm container and for an exec in shared mode (io.containerd.wasmtimed.v1,
// the daemon this file starts), on Debian's containerd 1.6 and on the pinned 2.x: the daemon
// makes the pty, the Task service pumps its master to containerd's fifos as in normal mode.
//  - `ctr run -t`, interactive, driven through a pty of script(1) (util-linux): the module's
//    output comes through the terminal (\r\n), what is typed reaches it (echoed by the line
//    discipline, then by the module), its exit code is ctr's. (The module's isatty() says no:
//    see the assertion.)
//  - The Task API over ttrpc against the thin shim's sandbox (as containerd's CRI plugin would
//    drive it; containerd only receives the events): Create with terminal=true, ResizePty (the
//    size the pty has, read with stty from the outside), an exec with a terminal of its own,
//    CloseIO of the exec (then EOF: hung up, 129), the init's exit code through Wait and Delete;
//    ten rounds of it leave the daemon's fds and threads where they were.
// Needs root, containerd, runc and script(1).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { socketPath } from "../../src/runtime-v2/address.ts";
import { TaskDefinition } from "../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { Status } from "../../src/task/gen/containerd/types/task/task.ts";
import { Client } from "../../src/ttrpc/index.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { REPO, type ShimEnv, WASM } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc") && !!Bun.which("script");
test("prerequisites: root, containerd, runc, script", () => expect(canRun).toBe(true));

const T = 120_000;
const THIN_SHIM = join(REPO, "build/bin/containerd-shim-wasmtimed-v1");
const IMAGE = "docker.io/library/bunwasi-shared-tty:latest";
const ROUNDS = 10;
/** How long the daemon's counts may take to come back (liveness only: idle runtime threads end after 10 s). */
const SETTLE_MS = 60_000;

const V2 = join(REPO, "build/containerd/v2.4.2/bin/containerd");
const VERSIONS = [{ name: "containerd 1.6", binary: undefined }, ...(existsSync(V2) ? [{ name: "containerd 2.4.2", binary: V2 }] : [])];
test("containerd 2.4.2 is built (scripts/containerd-versions.sh)", () => expect(existsSync(V2)).toBe(true));

/** Reads a non-blocking fd until `pred` holds for all that arrived (liveness: 20 s). */
async function readUntil(fd: number, pred: (t: string) => boolean, sofar = ""): Promise<string> {
  let text = sofar;
  const buf = Buffer.alloc(4096);
  const deadline = Date.now() + 20_000;
  while (!pred(text)) {
    if (Date.now() > deadline) throw new Error(`timed out; got ${JSON.stringify(text)}`);
    try {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n > 0) text += buf.toString("utf8", 0, n);
      else await Bun.sleep(10);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
      await Bun.sleep(10);
    }
  }
  return text;
}

/** Polls a non-blocking fifo until a read says EOF (no writer left). */
async function untilEof(fd: number, what: string): Promise<boolean> {
  const buf = Buffer.alloc(4096);
  return until(`EOF on ${what}`, () => {
    try {
      return readSync(fd, buf, 0, buf.length, null) === 0;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
      return false;
    }
  });
}

/** The ptys the daemon holds open now. */
function daemonPtys(pid: number): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const t = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (/^\/dev\/pts\/\d+$/.test(t)) out.add(t);
    } catch {}
  }
  return out;
}

/** `rows cols` of a pty, as stty reads it from the outside. */
function ptySize(pts: string): string {
  const r = Bun.spawnSync(["stty", "-F", pts, "size"], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`stty -F ${pts}: ${r.stderr}`);
  return r.stdout.toString().trim();
}

const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

for (const version of VERSIONS) {
  describe(`a terminal in shared mode, ${version.name}`, () => {
    let shared: SharedEnv | undefined;
    let dir: string;
    let daemon: Daemon;
    let env: ShimEnv;
    let seq = 0;
    const uid = (what: string) => `st-${what}-${process.pid}-${seq++}`;

    beforeAll(async () => {
      shared = await sharedEnv({ prefix: "/tmp/bwt-", containerd: version.binary ? { binary: version.binary } : {} });
      ({ dir, daemon, env } = shared);
      const archive = join(dir, "shared-tty.tar");
      writeImageArchive(archive, {
        name: IMAGE,
        files: [{ path: "/tty.wasm", source: join(WASM, "tty.wasm") }],
        config: { entrypoint: ["/tty.wasm"] },
      });
      const r = await env.cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import ${archive}: ${r.stderr}`);
    }, 300_000);

    afterAll(() => shared?.stop(), T);

    test(
      "ctr run -t: the module's output through the terminal, what is typed reaches it, its exit code is ctr's",
      async () => {
        const id = uid("run");
        const ctr = env.cd.ctrArgv(["run", "-t", "--rm", "--runtime", SHARED_RUNTIME, IMAGE, id]).map(shq).join(" ");
        // script(1) gives ctr a terminal of its own, copies our pipe into it and its output out.
        const p = Bun.spawn(["script", "-qefc", ctr, "/dev/null"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
        let out = "";
        const reading = (async () => {
          for await (const chunk of p.stdout) out += Buffer.from(chunk).toString("utf8");
        })();
        await until("the module's first line", () => out.includes("tty stdin="));
        p.stdin.write("hello there\n");
        p.stdin.flush();
        await until("the module's echo", () => out.includes("echo: hello there"));
        p.stdin.write("exit 5\n");
        p.stdin.flush();
        expect(await p.exited).toBe(5);
        await reading;
        p.stdin.end();
        // Through a terminal: \r\n line ends (script's terminal adds a \r of its own), stderr
        // merged, the typed line echoed by the line discipline (ctr's own terminal is raw).
        expect(out).toMatch(/to stderr\r+\n/);
        const lines = out.replace(/\r+\n/g, "\n");
        expect(lines).toContain("\nhello there\necho: hello there\nexit 5\n");
        // What the module's isatty() says: a terminal, all three (wasmtime opens the stdio it is
        // given by path as plain files; the engine answers fd_fdstat_get for them as a terminal,
        // as normal mode's executor, which inherits the pty, has it). docs/shared-mode.md.
        expect(lines).toContain("tty stdin=1 stdout=1 stderr=1\nto stderr\n");
      },
      T,
    );

    test(
      `over ttrpc: a terminal task and a terminal exec, ResizePty, CloseIO, exit codes; ${ROUNDS} rounds leave the daemon's fds and threads as they were`,
      async () => {
        const counts = () => ({ threads: readdirSync(`/proc/${daemon.pid}/task`).length, fds: daemon.fdCount() });
        const round = async (n: number) => {
          const id = uid(`t${n}`);
          const work = join(dir, id);
          const bundle = join(work, "bundle");
          mkdirSync(join(bundle, "rootfs"), { recursive: true });
          copyFileSync(join(WASM, "tty.wasm"), join(bundle, "rootfs/tty.wasm"));
          writeFileSync(
            join(bundle, "config.json"),
            JSON.stringify({
              ociVersion: "1.0.2",
              process: { terminal: true, args: ["/tty.wasm"], cwd: "/", env: ["TERM=xterm"], user: { uid: 0, gid: 0 } },
              root: { path: "rootfs" },
              linux: { namespaces: [{ type: "mount" }] },
            }),
          );
          const fifo = (name: string) => {
            const p = join(work, name);
            if (Bun.spawnSync(["mkfifo", p]).exitCode !== 0) throw new Error(`mkfifo ${p}`);
            return p;
          };
          const start = Bun.spawnSync(
            [THIN_SHIM, "-namespace", env.cd.namespace, "-address", env.cd.address, "-publish-binary", env.cd.binary, "-id", id, "start"],
            {
              cwd: bundle,
              env: { ...(process.env as Record<string, string>), ...daemon.env, TTRPC_ADDRESS: env.cd.ttrpcAddress },
              stdout: "pipe",
              stderr: "pipe",
            },
          );
          if (start.exitCode !== 0) throw new Error(`start: ${start.stderr}`);
          const client = await Client.connect(socketPath(start.stdout.toString().trim()));
          const t = client.service(TaskDefinition);
          try {
            const before = daemonPtys(daemon.pid);
            const stdin = fifo("in");
            const stdout = fifo("out");
            const out = openSync(stdout, constants.O_RDONLY | constants.O_NONBLOCK);
            await t.create({
              id,
              bundle,
              rootfs: [],
              terminal: true,
              stdin,
              stdout,
              stderr: "",
              checkpoint: "",
              parentCheckpoint: "",
              options: undefined,
            });
            const [pts] = [...daemonPtys(daemon.pid)].filter((p) => !before.has(p));
            expect(pts).toBeDefined();
            const { pid } = await t.start({ id, execId: "" });
            expect((await t.state({ id, execId: "" })).terminal).toBe(true);
            const input = openSync(stdin, constants.O_WRONLY | constants.O_NONBLOCK);
            let text = await readUntil(out, (x) => x.includes("to stderr\r\n"));
            expect(text).toBe("tty stdin=1 stdout=1 stderr=1\r\nto stderr\r\n");
            writeSync(input, "one\n");
            text = await readUntil(out, (x) => x.includes("echo: one\r\n"), text);
            // ResizePty: the size the pty has.
            await t.resizePty({ id, execId: "", width: 100 + n, height: 30 });
            expect(ptySize(pts as string)).toBe(`30 ${100 + n}`);

            // An exec with a terminal of its own.
            const xin = fifo("x-in");
            const xout = fifo("x-out");
            const xo = openSync(xout, constants.O_RDONLY | constants.O_NONBLOCK);
            const ptysBefore = daemonPtys(daemon.pid);
            await t.exec({
              id,
              execId: "x",
              terminal: true,
              stdin: xin,
              stdout: xout,
              stderr: "",
              spec: {
                typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process",
                value: new TextEncoder().encode(JSON.stringify({ args: ["/tty.wasm"], terminal: true, cwd: "/", env: [] })),
              },
            });
            await t.start({ id, execId: "x" });
            const [xpts] = [...daemonPtys(daemon.pid)].filter((p) => !ptysBefore.has(p));
            expect(xpts).toBeDefined();
            expect(xpts).not.toBe(pts);
            const xi = openSync(xin, constants.O_WRONLY | constants.O_NONBLOCK);
            let xtext = await readUntil(xo, (x) => x.includes("to stderr\r\n"));
            writeSync(xi, "two\n");
            xtext = await readUntil(xo, (x) => x.includes("echo: two\r\n"), xtext);
            await t.resizePty({ id, execId: "x", width: 51, height: 19 });
            expect(ptySize(xpts as string)).toBe("19 51");
            // The container's terminal is its own.
            expect(ptySize(pts as string)).toBe(`30 ${100 + n}`);
            // CloseIO lets go of our hold on its stdin; once the client's writer is gone too, stdin is at
            // EOF and the terminal is hung up, as under runc-v2: SIGHUP (128+1).
            await t.closeIO({ id, execId: "x", stdin: true });
            closeSync(xi);
            expect(await t.wait({ id, execId: "x" })).toMatchObject({ exitStatus: 129 });
            expect(await untilEof(xo, "the exec's output")).toBe(true);
            expect(await t.delete({ id, execId: "x" })).toMatchObject({ exitStatus: 129 });
            closeSync(xo);
            expect(daemonPtys(daemon.pid).has(xpts as string)).toBe(false);

            // The init runs on; its exit code through Wait and Delete.
            writeSync(input, "exit 7\n");
            expect(await t.wait({ id, execId: "" })).toMatchObject({ exitStatus: 7 });
            expect(await untilEof(out, "the task's output")).toBe(true);
            expect((await t.state({ id, execId: "" })).status).toBe(Status.STOPPED);
            expect(await t.delete({ id, execId: "" })).toMatchObject({ pid, exitStatus: 7 });
            closeSync(input);
            closeSync(out);
            expect(daemonPtys(daemon.pid).has(pts as string)).toBe(false);
          } finally {
            // A failed round leaves nothing mounted either.
            await t.kill({ id, execId: "", signal: 9, all: true }).catch(() => {});
            await t.delete({ id, execId: "" }).catch(() => {});
            await t.shutdown({ id, now: true }).catch(() => {});
            client.close();
          }
        };
        await round(0);
        // The baseline: the daemon after one round (its engine loaded, the session's own terminal held).
        const settle = (ok: (c: { threads: number; fds: number }) => boolean) =>
          until("the daemon's counts to settle", () => (ok(counts()) ? counts() : undefined), SETTLE_MS, 100);
        const baseline = await settle(() => true);
        for (let i = 1; i <= ROUNDS; i++) await round(i);
        const after = await settle((c) => c.fds <= baseline.fds && c.threads <= baseline.threads);
        expect(after.fds).toBeLessThanOrEqual(baseline.fds);
        expect(after.threads).toBeLessThanOrEqual(baseline.threads);
      },
      5 * T,
    );
  });
}
