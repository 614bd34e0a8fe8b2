// binary:// log URIs (`ctr run --log-uri binary:///path/to/logger?key=value`): containerd's
// pluggable logging. The shim starts the program with the container's stdout on fd 3 and its
// stderr on fd 4 (the read ends of two pipes whose write ends the container gets), and fd 5,
// which the program closes once it is ready; the container is created only after that.
// The program gets CONTAINER_ID and CONTAINER_NAMESPACE in its environment; each query
// parameter is an argument (`key`, then `value` if not empty), except `env.NAME=value`,
// which sets NAME, as containerd's runc shim does. The shim closes its copies of the write
// ends once the runtime has created the container (src/task/stdio.ts), so the program reads
// EOF when the container's process is gone; when the container is deleted, the program gets
// SIGTERM, and SIGKILL if it is still there after LOGGER_STOP_MS.
//
// All fds are passed by number (no Bun pipes) and the wait for readiness polls a
// non-blocking fd on the event loop: nothing here starts Bun's thread pool.

import { closeSync, readSync } from "node:fs";
import { pipe2, setNonBlocking, strerror } from "../linux/libc.ts";

/** How long Create waits for the program to close fd 5. */
export const LOGGER_READY_MS = 10_000;
/** How long a stopping program gets between SIGTERM and SIGKILL (containerd's runc shim: 12 s). */
export const LOGGER_STOP_MS = 12_000;

export interface BinaryLogger {
  /** The container's stdout and stderr: the pipes' write ends, the caller's to close. */
  readonly stdout: number;
  readonly stderr: number;
  readonly pid: number;
  /** Ends the program: SIGTERM, then SIGKILL after stopMs. */
  stop(stopMs?: number): Promise<void>;
}

/** The program and its arguments and environment, from a binary:// URI. */
export function loggerCommand(uri: string, id: string, namespace: string): { argv: string[]; env: Record<string, string> } {
  const url = new URL(uri);
  if (url.protocol !== "binary:") throw new Error(`${uri}: not a binary:// log URI`);
  const path = decodeURIComponent(url.pathname);
  if (!path.startsWith("/") || path === "/") throw new Error(`${uri}: a binary:// log URI names the logging program by its absolute path`);
  const args: string[] = [];
  const env: Record<string, string> = {};
  for (const [k, v] of url.searchParams) {
    if (k.startsWith("env.")) {
      const name = k.slice(4);
      if (name && name !== "CONTAINER_ID" && name !== "CONTAINER_NAMESPACE") env[name] = v;
      continue;
    }
    args.push(k);
    if (v !== "") args.push(v);
  }
  return { argv: [path, ...args], env: { ...env, CONTAINER_ID: id, CONTAINER_NAMESPACE: namespace } };
}

function pipe(): [number, number] {
  const [fds, e] = pipe2();
  if (!fds) throw new Error(`pipe2: ${strerror(e)}`);
  return fds;
}

function closeQuietly(fds: number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {} // ours, and already closed on an error path: nothing to do
  }
}

/** Starts the program of `uri` and resolves once it is ready (or throws, leaving nothing behind). */
export async function startBinaryLogger(uri: string, id: string, namespace: string, readyMs = LOGGER_READY_MS): Promise<BinaryLogger> {
  const { argv, env } = loggerCommand(uri, id, namespace);
  const open: number[] = [];
  let proc: ReturnType<typeof Bun.spawn> | undefined;
  try {
    const [outR, outW] = pipe();
    open.push(outR, outW);
    const [errR, errW] = pipe();
    open.push(errR, errW);
    const [readyR, readyW] = pipe();
    open.push(readyR, readyW);
    try {
      proc = Bun.spawn(argv, { stdio: ["ignore", "ignore", "ignore", outR, errR, readyW], env });
    } catch (e) {
      throw new Error(`${uri}: cannot start the logging program: ${(e as Error).message}`);
    }
    // The program holds its copies now; ours of its ends go, so EOF reaches it when the
    // container's are closed, and fd 5 reads EOF once it closes its copy.
    closeQuietly([outR, errR, readyW]);
    open.splice(0, open.length, outW, errW, readyR);
    await untilReady(readyR, proc, uri, readyMs);
    closeQuietly([readyR]);
    const started = proc;
    return {
      stdout: outW,
      stderr: errW,
      pid: started.pid,
      stop: (stopMs = LOGGER_STOP_MS) => stopLogger(started, stopMs),
    };
  } catch (e) {
    closeQuietly(open);
    if (proc) {
      proc.kill("SIGKILL");
      await proc.exited;
    }
    throw e;
  }
}

/** Resolves when the program closed fd 5 (or wrote to it, or exited: then its fd 5 is closed too). */
async function untilReady(fd: number, proc: ReturnType<typeof Bun.spawn>, uri: string, readyMs: number): Promise<void> {
  const [r, e] = setNonBlocking(fd);
  if (r < 0) throw new Error(`fcntl: ${strerror(e)}`);
  const buf = new Uint8Array(1);
  const deadline = performance.now() + readyMs;
  for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
    try {
      readSync(fd, buf, 0, 1, null);
      break; // EOF (0) or a byte: ready either way
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
    }
    if (performance.now() >= deadline) {
      throw new Error(`${uri}: the logging program did not close fd 5 (ready) within ${readyMs} ms`);
    }
    await Bun.sleep(delay);
  }
  // A program that ended before it was ready logs nothing: say so instead of running blind.
  if (proc.exitCode !== null || proc.signalCode !== null) {
    throw new Error(`${uri}: the logging program exited (${proc.exitCode ?? proc.signalCode}) before the container started`);
  }
}

async function stopLogger(proc: ReturnType<typeof Bun.spawn>, stopMs: number): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill("SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((res) => {
    timer = setTimeout(() => res("late"), stopMs);
  });
  try {
    if ((await Promise.race([proc.exited, late])) === "late") {
      proc.kill("SIGKILL");
      await proc.exited;
    }
  } finally {
    clearTimeout(timer);
  }
}
