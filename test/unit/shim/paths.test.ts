// Where the shim keeps its files: read from the environment it is given, when asked.
import { describe, expect, test } from "bun:test";
import { containerStateDir, runtimeRoot, shimPaths } from "../../../src/runtime-v2/paths.ts";

describe("shim paths", () => {
  test("defaults, and the environment's overrides", () => {
    expect(shimPaths({})).toEqual({ stateRoot: "/run/bunwasi", dataRoot: "/var/lib/bunwasi", compileCacheDir: "/var/lib/bunwasi/cache" });
    expect(shimPaths({ BUNWASI_STATE_ROOT: "/s", BUNWASI_EXEC_ROOT: "/d" })).toEqual({
      stateRoot: "/s",
      dataRoot: "/d",
      compileCacheDir: "/d/cache",
    });
  });

  test("runtime root and state dir are per namespace", () => {
    expect(runtimeRoot("k8s.io", "/s")).toBe("/s/runc/k8s.io");
    expect(containerStateDir("k8s.io", "/s")).toBe("/s/state/k8s.io");
    expect(runtimeRoot("a", "/s")).not.toBe(runtimeRoot("b", "/s"));
  });
});
