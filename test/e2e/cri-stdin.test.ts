// stdin piped through the CRI into a wasm module, as `kubectl attach -i` and `kubectl exec -i`
// pipe it: containerd's CRI plugin driven with crictl (test/support/cri.ts), in both modes
// (normal: handler `wasmtime`, io.containerd.wasmtime.v1, a shim server per pod; shared:
// handler `wasmtimed`, io.containerd.wasmtimed.v1, the daemon this file starts, where such a
// module runs on a run pool, docs/ARCHITECTURE.md "Run pools"), on containerd 1.6 and 2.x.
//
// test/wasm/stdin-exit.c copies stdin to stdout and, at EOF, exits with the status its argument
// names. Each case pipes some 300 KB of numbered lines (more than a pipe holds, so the relay
// hands them on piece by piece) and checks that they come back whole and in order, and that
// their end ends the module with that status: `crictl attach --stdin` to a container made with
// stdin and stdin_once, and two `crictl exec -i` at once of the module named by args[0] in a
// running container. In shared mode each of these runs is checked to have been pooled: the
// daemon says `<container id>[/<exec id>]: ran on a run pool` in its debug log when a run a pool
// held ends (src/daemon/inproc-runtime.ts, from the engine's RunStats.pooled), and nothing else
// writes that line. Missing binaries fail, never skip.
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { CRI_IMAGES, type CriEnv, crictlPath, HANDLER, SHARED_HANDLER } from "../support/cri.ts";
import { criModeHooks } from "../support/cri-mode.ts";
import type { Daemon } from "../support/daemon.ts";

const T = 120_000;
const CASES = [false, true].flatMap((shared) => CONTAINERDS.map((c) => ({ name: `containerd ${c.name}`, binary: c.binary, shared })));
/**
 * Attach rounds. Each round's output is in part still in the fifo when the module exits; a
 * daemon that reported the exit at once lost that tail on containerd 1.6.20 in about 3 rounds
 * of 8, a shim server in about 1 run of 12 (its task.Delete closes its read ends first: the
 * task layer waits for them, src/task/output-fifos.ts).
 */
const ROUNDS = 8;

test("prerequisites: root, runc, crictl, both containerds", () => {
  expect(process.getuid?.()).toBe(0);
  expect(Bun.which("runc")).not.toBeNull();
  for (const f of [crictlPath(), ...CONTAINERDS.map((c) => c.binary)]) expect(`${f}: ${existsSync(f)}`).toBe(`${f}: true`);
});

/** Numbered lines (their order shows), some 300 KB, ending in a character of several bytes and no newline. */
function numberedLines(tag: string): string {
  const lines = Array.from({ length: 5000 }, (_, i) => `${tag} ${String(i).padStart(5, "0")} ${"abcdefghijklmnopqrstuvwxyz".repeat(2)}`);
  return `${lines.join("\n")}\n${tag} end ✓`;
}

/** `got` is `want`; else where they part, in a message one can read (not two 300 KB strings). */
function expectSame(got: string, want: string): void {
  if (got === want) return;
  const g = got.split("\n");
  const w = want.split("\n");
  const at = w.findIndex((line, i) => g[i] !== line);
  expect({ bytes: got.length, lines: g.length, firstDifferentLine: at, there: g[at]?.slice(0, 80) }).toEqual({
    bytes: want.length,
    lines: w.length,
    firstDifferentLine: -1,
    there: undefined,
  });
}

/** Runs crictl (its argv from `cri`) with `input` on its stdin, closed after: its stdout, stderr and exit code. */
async function pipeInto(cri: CriEnv, args: string[], input: string): Promise<{ stdout: string; stderr: string; code: number }> {
  const p = Bun.spawn(cri.crictlArgv(args), { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  // Liveness only: a hang fails the test instead of holding it.
  const killer = setTimeout(() => p.kill("SIGKILL"), 90_000);
  try {
    const out = Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    p.stdin.write(input);
    await p.stdin.end();
    const [stdout, stderr, code] = await out;
    return { stdout, stderr, code };
  } finally {
    clearTimeout(killer);
  }
}

for (const { name, binary, shared } of CASES) {
  const handler = shared ? SHARED_HANDLER : HANDLER;
  describe(`stdin through CRI on ${name}, handler ${handler} (${shared ? "shared mode: pooled" : "normal mode"})`, () => {
    let cri: CriEnv;
    let shd: Daemon | undefined;
    criModeHooks({ binary, shared, prefix: "/tmp/bwsi-" }, T, (m) => {
      ({ cri, daemon: shd } = m);
    });

    /** The daemon's debug lines that say a pool took run `run` (a container id, or `<id>/` for its execs). */
    const pooledLines = (run: string) =>
      shd!
        .log()
        .split("\n")
        .filter((l) => l.includes(`msg="${run}`) && l.includes(': ran on a run pool"'));

    test(
      `crictl attach --stdin (stdin, stdin_once), ${ROUNDS} containers one after another: the whole input comes back in order, in the attach and in the log, and its end ends the module with its status (7)`,
      async () => {
        const pod = await cri.runPod("attach");
        for (let round = 0; round < ROUNDS; round++) {
          const id = await cri.createContainer(pod, {
            metadata: { name: `copy-${round}` },
            image: { image: CRI_IMAGES.tools },
            command: ["/stdin-exit.wasm", "7"],
            log_path: `copy-${round}.log`,
            stdin: true,
            stdin_once: true,
          });
          await cri.crictlOk(["start", id]);
          await cri.waitState(id, "CONTAINER_RUNNING");
          const input = numberedLines(`attach-${round}`);
          const r = await pipeInto(cri, ["attach", "--stdin", id], input);
          const st = await cri.waitState(id, "CONTAINER_EXITED");
          expect(r.stderr).toBe("");
          expectSame(r.stdout, input);
          // (crictl attach ends well whatever the container's status: that is CRI's to report)
          expect(r.code).toBe(0);
          expect({ exitCode: st.status.exitCode, reason: st.status.reason }).toEqual({ exitCode: 7, reason: "Error" });
          expectSame(await cri.crictlOk(["logs", id]), input);
          if (shd) expect(pooledLines(`${id}:`)).toHaveLength(1);
        }
        await cri.crictlOk(["rmp", "--force", pod.id]);
      },
      T,
    );

    test(
      "two crictl exec -i at once of a module named by args[0]: each input comes back whole and in order, each end ends its module with its own status (5, 6)",
      async () => {
        const pod = await cri.runPod("exec");
        // The container's module sleeps (it reads no stdin); the execs run beside it.
        const id = await cri.createContainer(pod, {
          metadata: { name: "sleeper" },
          image: { image: CRI_IMAGES.tools },
          command: ["/wasi-demo-app.wasm", "sleep", "3600"],
          log_path: "sleeper.log",
        });
        await cri.crictlOk(["start", id]);
        await cri.waitState(id, "CONTAINER_RUNNING");
        const inputs = [numberedLines("first"), numberedLines("second")];
        const [a, b] = await Promise.all(
          inputs.map((input, i) => pipeInto(cri, ["exec", "-i", id, "/stdin-exit.wasm", String(5 + i)], input)),
        );
        for (const [r, input, status] of [
          [a!, inputs[0]!, 5],
          [b!, inputs[1]!, 6],
        ] as const) {
          expectSame(r.stdout, input);
          // crictl itself exits 1; the module's status is in its message.
          expect(r.stderr).toContain(`command terminated with exit code ${status}`);
          expect(r.code).toBe(1);
        }
        // Both were pooled.
        if (shd) expect(pooledLines(`${id}/`)).toHaveLength(2);
        expect((await cri.inspect(id)).status.state).toBe("CONTAINER_RUNNING");
        await cri.crictlOk(["rmp", "--force", pod.id]);
        // And so was the container's own module, killed by the pod's removal.
        if (shd) expect(pooledLines(`${id}:`)).toHaveLength(1);
      },
      T,
    );
  });
}
