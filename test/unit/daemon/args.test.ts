// containerd-wasmtimed's command line (src/daemon/daemon.ts) and where the thin shim looks
// for it (src/daemon/paths.ts).
import { expect, test } from "bun:test";
import { parseDaemonArgs } from "../../../src/daemon/daemon.ts";
import { DEFAULT_DAEMON_SOCKET, daemonSocket } from "../../../src/daemon/paths.ts";

test("defaults, --socket in both spellings, --debug, --help, --version", () => {
  expect(parseDaemonArgs([])).toEqual({ socket: DEFAULT_DAEMON_SOCKET, debug: false, help: false, version: false });
  expect(DEFAULT_DAEMON_SOCKET.startsWith("/run/")).toBe(true);
  expect(parseDaemonArgs(["--socket", "/tmp/a.sock", "--debug"])).toMatchObject({ socket: "/tmp/a.sock", debug: true });
  expect(parseDaemonArgs(["--socket=/tmp/b.sock"]).socket).toBe("/tmp/b.sock");
  expect(parseDaemonArgs(["--help"]).help).toBe(true);
  expect(parseDaemonArgs(["--version"]).version).toBe(true);
});

test("a missing value or an unknown argument is an error naming it", () => {
  expect(() => parseDaemonArgs(["--socket"])).toThrow("--socket needs a path");
  expect(() => parseDaemonArgs(["--nope"])).toThrow("unknown argument --nope");
});

test("the thin shim asks BUNWASI_DAEMON_SOCKET (containerd's environment), else the default", () => {
  expect(daemonSocket({})).toBe(DEFAULT_DAEMON_SOCKET);
  expect(daemonSocket({ BUNWASI_DAEMON_SOCKET: "/x/d.sock" })).toBe("/x/d.sock");
});
