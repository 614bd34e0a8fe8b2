// The shim server's TaskHost (src/shim/normal-host.ts): one state directory and event publisher
// per namespace, made when a namespace is first used and remembered, with the namespace's
// runtime root, for the server's exit.
import { afterAll, describe, expect, test } from "bun:test";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { ExitWatcher } from "../../../src/linux/exit-watcher.ts";
import { parseShimFlags } from "../../../src/runtime-v2/flags.ts";
import { normalModeHost, type ServedNamespace } from "../../../src/shim/normal-host.ts";
import { Publisher } from "../../../src/task/events.ts";

describe("normal-mode host", () => {
  const watcher = new ExitWatcher({ reapIntervalMs: 0 });
  afterAll(() => watcher.close());

  test("each namespace gets its own state dir and publisher, and its runtime root is tidied with it", async () => {
    const namespaces = new Map<string, ServedNamespace>();
    const host = await normalModeHost({
      flags: parseShimFlags(["-namespace", "default", "-address", "/c.sock", "-id", "x", "serve"]),
      paths: { stateRoot: "/st", dataRoot: "/data", compileCacheDir: "/data/cache" },
      log: () => {},
      watcher,
      engine: wasmtime,
      runtimeBinary: "/bin/false",
      ttrpcAddress: "/c.sock.ttrpc",
      namespaces,
    });
    const a = host.namespace("a");
    const b = host.namespace("k8s.io");
    expect(a.stateDir).toBe("/st/state/a");
    expect(b.stateDir).toBe("/st/state/k8s.io");
    expect(a.events).toBeInstanceOf(Publisher);
    expect(a.events).not.toBe(b.events);
    expect([...namespaces.keys()]).toEqual(["a", "k8s.io"]);
    expect(namespaces.get("a")!.dirs).toEqual(["/st/state/a", "/st/runc/a"]);
    expect(namespaces.get("k8s.io")!.dirs).toEqual(["/st/state/k8s.io", "/st/runc/k8s.io"]);
  });
});
