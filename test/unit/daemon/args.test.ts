// containerd-wasmtimed's command line (src/daemon/daemon.ts) and where the thin shim looks
// for it (src/daemon/paths.ts).
import { expect, test } from "bun:test";
import { DEFAULT_MAX_OPEN_FILES, DEFAULT_MEMORY_LIMIT, parseDaemonArgs, parseSize, successorArgs } from "../../../src/daemon/daemon.ts";
import { daemonSocket, defaultDaemonSocket } from "../../../src/daemon/paths.ts";

const DEFAULT_DAEMON_SOCKET = defaultDaemonSocket("containerd-wasmtimed");

test("defaults, --socket in both spellings, --debug, --help, --version", () => {
  expect(parseDaemonArgs([], DEFAULT_DAEMON_SOCKET)).toEqual({
    socket: DEFAULT_DAEMON_SOCKET,
    defaultMemoryLimit: DEFAULT_MEMORY_LIMIT,
    maxOpenFiles: DEFAULT_MAX_OPEN_FILES,
    // The default budget is 90% of the open-file limit, known only once the daemon runs.
    fdBudget: undefined,
    // Metrics are off unless asked for.
    metrics: undefined,
    debug: false,
    // A second daemon refuses unless asked to take over.
    takeOver: false,
    detach: false,
    pidFile: undefined,
    help: false,
    version: false,
  });
  // The documented default (README "Shared mode", the systemd unit).
  expect(DEFAULT_DAEMON_SOCKET).toBe("/run/bunwasi/wasmtimed.sock");
  expect(parseDaemonArgs(["--socket", "/tmp/a.sock", "--debug"], DEFAULT_DAEMON_SOCKET)).toMatchObject({
    socket: "/tmp/a.sock",
    debug: true,
  });
  expect(parseDaemonArgs(["--socket=/tmp/b.sock"], DEFAULT_DAEMON_SOCKET).socket).toBe("/tmp/b.sock");
  for (const h of ["--help", "-help", "-h", "help"]) expect(parseDaemonArgs([h], DEFAULT_DAEMON_SOCKET).help).toBe(true);
  expect(parseDaemonArgs(["--version"], DEFAULT_DAEMON_SOCKET).version).toBe(true);
});

test("--default-memory-limit: bytes or Kubernetes' suffixes; 0 is none; the default is 512Mi (README)", () => {
  expect(DEFAULT_MEMORY_LIMIT).toBe(512 * 2 ** 20);
  const limit = (v: string) => parseDaemonArgs(["--default-memory-limit", v], DEFAULT_DAEMON_SOCKET).defaultMemoryLimit;
  expect(limit("1048576")).toBe(1048576);
  expect(limit("64Mi")).toBe(64 * 2 ** 20);
  expect(limit("2G")).toBe(2e9);
  expect(limit("0")).toBeUndefined();
  expect(parseDaemonArgs(["--default-memory-limit=1Gi"], DEFAULT_DAEMON_SOCKET).defaultMemoryLimit).toBe(2 ** 30);
  for (const bad of ["", "-1", "1.5G", "64MB", "lots"]) expect(parseSize(bad)).toBeUndefined();
  expect(() => limit("64MB")).toThrow('--default-memory-limit: "64MB" is not a size');
  expect(() => parseDaemonArgs(["--default-memory-limit"], DEFAULT_DAEMON_SOCKET)).toThrow("--default-memory-limit needs a size");
});

test("--max-open-files: the per-container cap on open WASI handles, a positive number", () => {
  expect(parseDaemonArgs(["--max-open-files", "64"], DEFAULT_DAEMON_SOCKET).maxOpenFiles).toBe(64);
  expect(parseDaemonArgs(["--max-open-files=4096"], DEFAULT_DAEMON_SOCKET).maxOpenFiles).toBe(4096);
  for (const bad of ["0", "-1", "x", "1.5"]) {
    expect(() => parseDaemonArgs(["--max-open-files", bad], DEFAULT_DAEMON_SOCKET)).toThrow("--max-open-files needs a positive number");
  }
});

test("--fd-budget: the open files at which a successor takes the new pods, a positive number", () => {
  expect(parseDaemonArgs(["--fd-budget", "200"], DEFAULT_DAEMON_SOCKET).fdBudget).toBe(200);
  expect(parseDaemonArgs(["--fd-budget=18000"], DEFAULT_DAEMON_SOCKET).fdBudget).toBe(18000);
  for (const bad of ["0", "-1", "x", "1.5"]) {
    expect(() => parseDaemonArgs(["--fd-budget", bad], DEFAULT_DAEMON_SOCKET)).toThrow("--fd-budget needs a positive number");
  }
});

test("an overflow successor gets the daemon's own arguments with --take-over, never --detach", () => {
  const mine = ["--socket", "/tmp/a.sock", "--fd-budget", "200", "--pid-file", "/tmp/p"];
  expect(successorArgs(mine)).toEqual([...mine, "--take-over"]);
  expect(successorArgs(["--take-over", "--detach", "--debug"])).toEqual(["--take-over", "--debug"]);
  for (const a of [successorArgs(mine), successorArgs(["--take-over"])])
    expect(parseDaemonArgs(a, DEFAULT_DAEMON_SOCKET).takeOver).toBe(true);
});

test("--metrics-address: a unix socket or a loopback TCP address, nothing else", () => {
  const m = (v: string) => parseDaemonArgs(["--metrics-address", v], DEFAULT_DAEMON_SOCKET).metrics;
  expect(m("unix:///run/bunwasi/metrics.sock")).toEqual({ kind: "unix", path: "/run/bunwasi/metrics.sock" });
  expect(m("/run/bunwasi/metrics.sock")).toEqual({ kind: "unix", path: "/run/bunwasi/metrics.sock" });
  expect(m("127.0.0.1:9464")).toEqual({ kind: "tcp", hostname: "127.0.0.1", port: 9464 });
  expect(m("127.8.9.10:0")).toEqual({ kind: "tcp", hostname: "127.8.9.10", port: 0 });
  expect(m("[::1]:9464")).toEqual({ kind: "tcp", hostname: "::1", port: 9464 });
  expect(m("localhost:9464")).toEqual({ kind: "tcp", hostname: "127.0.0.1", port: 9464 });
  expect(parseDaemonArgs(["--metrics-address=127.0.0.1:1"], DEFAULT_DAEMON_SOCKET).metrics).toEqual({
    kind: "tcp",
    hostname: "127.0.0.1",
    port: 1,
  });
  // Anything reachable from the network is refused, saying why.
  for (const open of ["0.0.0.0:9464", "[::]:9464", "10.0.0.5:9464", "node.example:9464", "128.0.0.1:9464"])
    expect(() => m(open)).toThrow("is not a loopback address. The daemon's metrics name every pod's containers");
  expect(() => m("unix://relative.sock")).toThrow("a unix socket's path must be absolute");
  expect(() => m("127.0.0.1")).toThrow("is not an address");
  expect(() => m("127.0.0.1:70000")).toThrow("out of range");
  expect(() => parseDaemonArgs(["--metrics-address"], DEFAULT_DAEMON_SOCKET)).toThrow("--metrics-address needs an address");
});

test("a missing value or an unknown argument is an error naming it", () => {
  expect(() => parseDaemonArgs(["--socket"], DEFAULT_DAEMON_SOCKET)).toThrow("--socket needs a path");
  expect(() => parseDaemonArgs(["--nope"], DEFAULT_DAEMON_SOCKET)).toThrow("unknown argument --nope");
});

test("a switch given a value is an error (--detach=x would detach an overflow successor again)", () => {
  expect(() => parseDaemonArgs(["--take-over", "--detach=x"], DEFAULT_DAEMON_SOCKET)).toThrow("--detach takes no value");
  expect(() => parseDaemonArgs(["--take-over=1"], DEFAULT_DAEMON_SOCKET)).toThrow("--take-over takes no value");
  expect(() => parseDaemonArgs(["--debug=no"], DEFAULT_DAEMON_SOCKET)).toThrow("--debug takes no value");
});

test("the thin shim asks BUNWASI_DAEMON_SOCKET (containerd's environment), else the default", () => {
  expect(daemonSocket("containerd-wasmtimed", {})).toBe(DEFAULT_DAEMON_SOCKET);
  expect(daemonSocket("containerd-wasmtimed", { BUNWASI_DAEMON_SOCKET: "/x/d.sock" })).toBe("/x/d.sock");
});

test("--take-over, --detach (only with it), --pid-file", () => {
  expect(parseDaemonArgs(["--take-over", "--pid-file", "/run/x.pid"], DEFAULT_DAEMON_SOCKET)).toMatchObject({
    takeOver: true,
    detach: false,
    pidFile: "/run/x.pid",
  });
  expect(parseDaemonArgs(["--take-over", "--detach"], DEFAULT_DAEMON_SOCKET)).toMatchObject({ takeOver: true, detach: true });
  expect(() => parseDaemonArgs(["--detach"], DEFAULT_DAEMON_SOCKET)).toThrow("--detach goes with --take-over");
  expect(() => parseDaemonArgs(["--pid-file"], DEFAULT_DAEMON_SOCKET)).toThrow("--pid-file needs a path");
});
