// containerd-wasmtimed's command line (src/daemon/daemon.ts) and where the thin shim looks
// for it (src/daemon/paths.ts).
import { expect, test } from "bun:test";
import { DEFAULT_MEMORY_LIMIT, parseDaemonArgs, parseSize } from "../../../src/daemon/daemon.ts";
import { daemonSocket, defaultDaemonSocket } from "../../../src/daemon/paths.ts";

const DEFAULT_DAEMON_SOCKET = defaultDaemonSocket("containerd-wasmtimed");

test("defaults, --socket in both spellings, --debug, --help, --version", () => {
  expect(parseDaemonArgs([], DEFAULT_DAEMON_SOCKET)).toEqual({
    socket: DEFAULT_DAEMON_SOCKET,
    defaultMemoryLimit: DEFAULT_MEMORY_LIMIT,
    debug: false,
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

test("a missing value or an unknown argument is an error naming it", () => {
  expect(() => parseDaemonArgs(["--socket"], DEFAULT_DAEMON_SOCKET)).toThrow("--socket needs a path");
  expect(() => parseDaemonArgs(["--nope"], DEFAULT_DAEMON_SOCKET)).toThrow("unknown argument --nope");
});

test("the thin shim asks BUNWASI_DAEMON_SOCKET (containerd's environment), else the default", () => {
  expect(daemonSocket("containerd-wasmtimed", {})).toBe(DEFAULT_DAEMON_SOCKET);
  expect(daemonSocket("containerd-wasmtimed", { BUNWASI_DAEMON_SOCKET: "/x/d.sock" })).toBe("/x/d.sock");
});
