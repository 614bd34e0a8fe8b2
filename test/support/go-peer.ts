// The Go ttrpc peer (test/interop/go, the real github.com/containerd/ttrpc) and our own
// Echo server, as processes: build the peer once, start a server and wait for READY,
// run one Go client scenario and parse its JSON line. Used by the interop tests and
// bench/ttrpc/run.ts. Nothing here skips: if Go or the build is missing, it throws.

import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";

export const REPO_ROOT = resolve(import.meta.dir, "../..");
const BUILD_SCRIPT = join(REPO_ROOT, "test/interop/go/build.sh");
const ECHO_SERVER = join(REPO_ROOT, "test/support/echo-server.ts");
/** Where build.sh puts the binary (its default OUT_DIR). */
export const PEER_BIN = join(REPO_ROOT, "build/ttrpc-peer");

let building: Promise<string> | null = null;

/**
 * Runs build.sh (a no-op when the binary is up to date) once per process and resolves
 * to the binary's path. Rejects with build.sh's output if Go is missing or the build fails.
 */
export function buildPeer(): Promise<string> {
  building ??= (async () => {
    const env = { ...process.env, PATH: `${process.env.PATH ?? ""}:/usr/local/go/bin` };
    const proc = Bun.spawn(["bash", BUILD_SCRIPT], { cwd: REPO_ROOT, env, stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    if (code !== 0) throw new Error(`building the Go ttrpc peer failed (build.sh exit ${code}):\n${out}${err}`);
    if (!existsSync(PEER_BIN)) throw new Error(`build.sh succeeded but ${PEER_BIN} is missing:\n${out}${err}`);
    return PEER_BIN;
  })();
  // A failed build is not cached: the next caller tries again (and fails loudly again).
  building.catch(() => {
    building = null;
  });
  return building;
}

/** A server process that printed READY. */
export interface ServerProcess {
  readonly proc: Subprocess<"ignore", "pipe", "pipe">;
  readonly socket: string;
  /** What the process wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`; resolves to the exit code. */
  stop(graceMs?: number): Promise<number>;
}

/** Starts `build/ttrpc-peer server -socket SOCKET` (builds first if needed). */
export async function startGoServer(socket: string): Promise<ServerProcess> {
  const bin = await buildPeer();
  return startServer([bin, "server", "-socket", socket], socket, "Go ttrpc-peer server");
}

/** Starts our Echo server (test/support/echo-server.ts) in a Bun process of its own. */
export function startTsServer(socket: string, bunArgs: string[] = []): Promise<ServerProcess> {
  return startServer([process.execPath, ...bunArgs, ECHO_SERVER, socket], socket, "our echo-server.ts");
}

async function startServer(cmd: string[], socket: string, what: string, readyTimeoutMs = 15_000): Promise<ServerProcess> {
  const proc = Bun.spawn(cmd, { cwd: REPO_ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let errText = "";
  void (async () => {
    const dec = new TextDecoder();
    for await (const chunk of proc.stderr) errText += dec.decode(chunk, { stream: true });
  })().catch(() => {});

  const reader = proc.stdout.getReader();
  const dec = new TextDecoder();
  let outText = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => {
    timer = setTimeout(() => r("timeout"), readyTimeoutMs);
  });
  try {
    while (!outText.includes("READY")) {
      const next = await Promise.race([reader.read(), timeout]);
      if (next === "timeout") throw new Error(`${what} printed no READY within ${readyTimeoutMs} ms`);
      if (next.done) {
        const code = await proc.exited;
        throw new Error(`${what} exited (${code}) before READY; stdout: ${outText}; stderr: ${errText}`);
      }
      outText += dec.decode(next.value, { stream: true });
    }
  } catch (e) {
    proc.kill("SIGKILL");
    throw e;
  } finally {
    clearTimeout(timer);
  }
  // Keep draining stdout so the process never blocks on a full pipe.
  void (async () => {
    for (;;) if ((await reader.read()).done) return;
  })().catch(() => {});

  return {
    proc,
    socket,
    stderr: () => errText,
    async stop(graceMs = 3000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode ?? -1;
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), graceMs);
      const code = await proc.exited;
      clearTimeout(t);
      return code;
    },
  };
}

/** Runs `ttrpc-peer client -socket SOCKET -case NAME` and returns the parsed JSON line. */
export async function runGoCase(socket: string, name: string, timeoutMs = 30_000): Promise<Record<string, any>> {
  const { stdout } = await runPeer(["client", "-socket", socket, "-case", name, "-timeout", `${timeoutMs}ms`], timeoutMs + 5000);
  return parseJsonLine(stdout, `case ${name}`);
}

export interface BenchResult {
  conns: number;
  inflight: number;
  size: number;
  calls: number;
  errors: number;
  seconds: number;
  calls_per_sec: number;
  p50_us: number;
  p99_us: number;
}

export interface BenchOptions {
  conns: number;
  inflight: number;
  durationS: number;
  warmupS: number;
  size: number;
}

export function benchArgs(socket: string, o: BenchOptions): string[] {
  return [
    "-socket",
    socket,
    "-conns",
    String(o.conns),
    "-inflight",
    String(o.inflight),
    "-duration",
    `${o.durationS}s`,
    "-warmup",
    `${o.warmupS}s`,
    "-size",
    String(o.size),
  ];
}

/** Runs the Go load generator (`ttrpc-peer bench-client`) against SOCKET. */
export async function runGoBench(socket: string, o: BenchOptions): Promise<BenchResult> {
  const limit = (o.durationS + o.warmupS) * 1000 + 30_000;
  const { stdout } = await runPeer(["bench-client", ...benchArgs(socket, o)], limit);
  return parseJsonLine(stdout, "bench-client") as BenchResult;
}

async function runPeer(args: string[], limitMs: number): Promise<{ stdout: string; stderr: string }> {
  const bin = await buildPeer();
  const proc = Bun.spawn([bin, ...args], { cwd: REPO_ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const killer = setTimeout(() => proc.kill("SIGKILL"), limitMs);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(killer);
  if (code !== 0) throw new Error(`ttrpc-peer ${args.join(" ")} exited ${code}\nstdout: ${stdout}\nstderr: ${stderr}`);
  return { stdout, stderr };
}

export function parseJsonLine(stdout: string, what: string): Record<string, any> {
  const line = stdout.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line);
  } catch {
    throw new Error(`${what}: output is not one JSON line: ${JSON.stringify(stdout)}`);
  }
}
