// containerd-wasmtimed's command line (src/daemon/daemon.ts) and where the thin shim looks
// for it (src/daemon/paths.ts).
import { expect, test } from "bun:test";
import { DEFAULT_MAX_OPEN_FILES, parseDaemonArgs } from "../../../src/daemon/daemon.ts";
import { daemonSocket, defaultDaemonSocket } from "../../../src/daemon/paths.ts";

const DEFAULT_DAEMON_SOCKET = defaultDaemonSocket("containerd-wasmtimed");

test("defaults, --socket in both spellings, --debug, --help, --version", () => {
  expect(parseDaemonArgs([], DEFAULT_DAEMON_SOCKET)).toEqual({
    socket: DEFAULT_DAEMON_SOCKET,
    debug: false,
    help: false,
    version: false,
    maxOpenFiles: DEFAULT_MAX_OPEN_FILES,
  });
  // The documented default (README "Shared mode", the systemd unit).
  expect(DEFAULT_DAEMON_SOCKET).toBe("/run/bunwasi/wasmtimed.sock");
  expect(parseDaemonArgs(["--socket", "/tmp/a.sock", "--debug"], DEFAULT_DAEMON_SOCKET)).toMatchObject({
    socket: "/tmp/a.sock",
    debug: true,
  });
  expect(parseDaemonArgs(["--socket=/tmp/b.sock"], DEFAULT_DAEMON_SOCKET).socket).toBe("/tmp/b.sock");
  expect(parseDaemonArgs(["--help"], DEFAULT_DAEMON_SOCKET).help).toBe(true);
  expect(parseDaemonArgs(["--version"], DEFAULT_DAEMON_SOCKET).version).toBe(true);
});

test("--max-open-files: the per-container cap on open WASI handles, a positive number", () => {
  expect(parseDaemonArgs(["--max-open-files", "64"], DEFAULT_DAEMON_SOCKET).maxOpenFiles).toBe(64);
  expect(parseDaemonArgs(["--max-open-files=4096"], DEFAULT_DAEMON_SOCKET).maxOpenFiles).toBe(4096);
  for (const bad of ["0", "-1", "x", "1.5"]) {
    expect(() => parseDaemonArgs(["--max-open-files", bad], DEFAULT_DAEMON_SOCKET)).toThrow("--max-open-files needs a positive number");
  }
});

test("a missing value or an unknown argument is an error naming it", () => {
  expect(() => parseDaemonArgs(["--socket"], DEFAULT_DAEMON_SOCKET)).toThrow("--socket needs a path");
  expect(() => parseDaemonArgs(["--nope"], DEFAULT_DAEMON_SOCKET)).toThrow("unknown argument --nope");
});

test("the thin shim asks BUNWASI_DAEMON_SOCKET (containerd's environment), else the default", () => {
  expect(daemonSocket("containerd-wasmtimed", {})).toBe(DEFAULT_DAEMON_SOCKET);
  expect(daemonSocket("containerd-wasmtimed", { BUNWASI_DAEMON_SOCKET: "/x/d.sock" })).toBe("/x/d.sock");
});
