// binary:// log URIs (`ctr run --log-uri binary:///path?k=v`), containerd's pluggable logging,
// against the real containerd (Debian's 1.6), runc and the compiled shim, in both modes: the
// logging program gets the container's stdout on fd 3 and stderr on fd 4, says it is ready by
// closing fd 5, sees CONTAINER_ID, CONTAINER_NAMESPACE, the query as arguments and `env.`
// parameters as environment; it is stopped with the container's delete. A program that never
// gets ready, or is not there, fails the Create with a message saying so. Needs root.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Containerd } from "../support/containerd.ts";
import { ctrTasks, fileText, waitFile } from "../support/ctr-tasks.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "../support/daemon.ts";
import { IMAGES, RUNTIME as NORMAL_RUNTIME, type ShimEnv, shimEnv } from "../support/shim-env.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && existsSync("/usr/bin/ctr");
test("prerequisites: root, containerd", () => expect(canRun).toBe(true));
const T = 60_000;

// Ready first (fd 5 closed before the readers start, so they do not inherit it), then one
// reader per stream; its own pid, arguments and environment go to files for the test.
const LOGGER = `#!/bin/sh
dir="$2"
echo $$ > "$dir/pid"
echo "$*" > "$dir/args"
echo "$CONTAINER_ID $CONTAINER_NAMESPACE $LOGGER_TAG" > "$dir/env"
exec 5>&-
cat <&3 > "$dir/out" &
cat <&4 > "$dir/err" &
wait
`;
const NEVER_READY = `#!/bin/sh
exec sleep 600
`;

const MODES = [
  { name: "normal", runtime: NORMAL_RUNTIME, shared: false },
  { name: "shared", runtime: SHARED_RUNTIME, shared: true },
] as const;

describe.each(MODES.map((m) => [m.name, m] as const))("binary:// log URIs (ctr + containerd 1.6), %s mode", (_n, mode) => {
  let env: ShimEnv;
  let cd: Containerd;
  let daemon: Daemon | undefined;
  let logger: string;
  let neverReady: string;

  beforeAll(async () => {
    if (mode.shared) daemon = await startDaemon(mkdtempSync("/tmp/bwg-"));
    env = await shimEnv(daemon ? { env: daemon.env } : {});
    cd = env.cd;
    logger = join(env.dir, "logger.sh");
    writeFileSync(logger, LOGGER);
    chmodSync(logger, 0o755);
    neverReady = join(env.dir, "never-ready.sh");
    writeFileSync(neverReady, NEVER_READY);
    chmodSync(neverReady, 0o755);
  }, 240_000);

  afterAll(async () => {
    await env?.stop();
    if (daemon) {
      expect(await daemon.stop("SIGTERM")).toBe(0);
      rmSync(dirname(daemon.socket), { recursive: true, force: true });
    }
  }, T);

  const { ctrOk } = ctrTasks(
    () => cd,
    () => env.dir,
  );

  function outDir(id: string): string {
    const d = join(env.dir, `log-${id}`);
    mkdirSync(d, { recursive: true });
    return d;
  }

  async function gone(pid: number): Promise<boolean> {
    const deadline = Date.now() + 30_000; // liveness only
    while (Date.now() < deadline && existsSync(`/proc/${pid}`)) await Bun.sleep(20);
    return !existsSync(`/proc/${pid}`);
  }

  test(
    "a wasm module's output reaches the program; its id, namespace, arguments and env. parameters too; it is gone after the delete",
    async () => {
      const id = "log-wasm";
      const dir = outDir(id);
      const uri = `binary://${logger}?dir=${dir}&env.LOGGER_TAG=tagged`;
      await ctrOk(["run", "--rm", "--runtime", mode.runtime, "--log-uri", uri, IMAGES.demo, id, "/wasi-demo-app.wasm", "echo", "hello"]);
      expect(await waitFile(join(dir, "out"), (t) => t.includes("hello"))).toBe(true);
      expect(fileText(join(dir, "args")).trim()).toBe(`dir ${dir}`);
      expect(fileText(join(dir, "env")).trim()).toBe(`${id} ${cd.namespace} tagged`);
      expect(await gone(Number(fileText(join(dir, "pid"))))).toBe(true);
    },
    T,
  );

  test(
    "a native container's stdout and stderr reach fds 3 and 4 apart",
    async () => {
      const id = "log-native";
      const dir = outDir(id);
      const uri = `binary://${logger}?dir=${dir}`;
      await ctrOk([
        "run",
        "--rm",
        "--runtime",
        mode.runtime,
        "--log-uri",
        uri,
        IMAGES.busybox,
        id,
        "sh",
        "-c",
        "echo to-out; echo to-err >&2",
      ]);
      expect(await waitFile(join(dir, "out"), (t) => t.includes("to-out"))).toBe(true);
      expect(await waitFile(join(dir, "err"), (t) => t.includes("to-err"))).toBe(true);
      expect(fileText(join(dir, "out"))).not.toContain("to-err");
      expect(fileText(join(dir, "err"))).not.toContain("to-out");
      expect(await gone(Number(fileText(join(dir, "pid"))))).toBe(true);
    },
    T,
  );

  test(
    "a program that never closes fd 5 fails the Create, saying so, and is not left running",
    async () => {
      const id = "log-never";
      const r = await cd.ctr(["run", "--rm", "--runtime", mode.runtime, "--log-uri", `binary://${neverReady}`, IMAGES.demo, id], {
        timeoutMs: 45_000,
      });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain("did not close fd 5");
      await cd.ctr(["container", "rm", id]);
      const left = Bun.spawnSync(["pgrep", "-f", neverReady]).stdout.toString().trim();
      expect(left).toBe("");
    },
    T,
  );

  test(
    "a program that is not there fails the Create with its path",
    async () => {
      const id = "log-missing";
      const missing = join(env.dir, "no-such-logger");
      const r = await cd.ctr(["run", "--rm", "--runtime", mode.runtime, "--log-uri", `binary://${missing}`, IMAGES.demo, id]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(missing);
      await cd.ctr(["container", "rm", id]);
    },
    T,
  );
});
