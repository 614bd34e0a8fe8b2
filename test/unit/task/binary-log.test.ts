// The binary:// URI's program, arguments and environment (src/task/binary-log.ts), as
// containerd's runc shim derives them; the e2e side is test/e2e/shim-logging.test.ts.
import { expect, test } from "bun:test";
import { loggerCommand } from "../../../src/task/binary-log.ts";

test("the path is the program; each query parameter is an argument, then its value if not empty", () => {
  expect(loggerCommand("binary:///usr/bin/logger?--tag=web&--quiet&x=1", "c1", "k8s.io")).toEqual({
    argv: ["/usr/bin/logger", "--tag", "web", "--quiet", "x", "1"],
    env: { CONTAINER_ID: "c1", CONTAINER_NAMESPACE: "k8s.io" },
  });
});

test("env.NAME parameters set NAME, but never the container's id or namespace", () => {
  const { argv, env } = loggerCommand("binary:///l?env.LEVEL=debug&env.CONTAINER_ID=evil&a=b", "c1", "ns");
  expect(argv).toEqual(["/l", "a", "b"]);
  expect(env).toEqual({ LEVEL: "debug", CONTAINER_ID: "c1", CONTAINER_NAMESPACE: "ns" });
});

test("an escaped path is decoded", () => {
  expect(loggerCommand("binary:///opt/my%20logger", "c", "n").argv).toEqual(["/opt/my logger"]);
});

test("a URI with no program, or another scheme, is refused with a message naming it", () => {
  expect(() => loggerCommand("binary://", "c", "n")).toThrow("absolute path");
  expect(() => loggerCommand("binary:///", "c", "n")).toThrow("absolute path");
  expect(() => loggerCommand("file:///x", "c", "n")).toThrow("not a binary:// log URI");
});
