// A runc container never joins the namespaces of the process that serves it (what CRI's spec
// names under containerd's shim sandboxer, whose pod pid is ours).
import { describe, expect, test } from "bun:test";
import { namespacesOf, wasmNamespaces } from "../../../src/oci/pod-namespaces.ts";
import { refuseServerNamespaces } from "../../../src/runtime-v2/pod-namespaces.ts";
import { Code, TtrpcError } from "../../../src/ttrpc/index.ts";

const spec = (namespaces: { type: string; path?: string }[]) => ({ linux: { namespaces } });

describe("namespaces of the serving process in a spec", () => {
  test("CRI's spec under the shim sandboxer: net, ipc and uts of our pid are found; a pause's pid, or new namespaces, are not", () => {
    const cri = spec([
      { type: "pid" },
      { type: "network", path: "/proc/77/ns/net" },
      { type: "ipc", path: "/proc/77/ns/ipc" },
      { type: "uts", path: "/proc/77/ns/uts" },
      { type: "mount" },
    ]);
    expect(namespacesOf(cri.linux.namespaces, 77)).toEqual(["network", "ipc", "uts"]);
    expect(namespacesOf(cri.linux.namespaces, 7)).toEqual([]);
    expect(namespacesOf(cri.linux.namespaces, 777)).toEqual([]);
    expect(namespacesOf([{ type: "network", path: "/var/run/netns/cni-1" }], 77)).toEqual([]);
    expect(namespacesOf(undefined, 77)).toEqual([]);
  });

  test("a wasm container's: our IPC, UTS and PID joins become its own namespaces, the network join (the host's) stays; others untouched", () => {
    const ns = [
      { type: "pid", path: "/proc/77/ns/pid" },
      { type: "network", path: "/proc/77/ns/net" },
      { type: "ipc", path: "/proc/77/ns/ipc" },
      { type: "uts", path: "/proc/77/ns/uts" },
      { type: "mount" },
      { type: "cgroup", path: "/proc/5/ns/cgroup" },
    ];
    expect(wasmNamespaces(ns, 77)).toEqual([
      { type: "pid" },
      { type: "network", path: "/proc/77/ns/net" },
      { type: "ipc" },
      { type: "uts" },
      { type: "mount" },
      { type: "cgroup", path: "/proc/5/ns/cgroup" },
    ]);
    expect(wasmNamespaces(ns, 6)).toEqual(ns);
    expect(wasmNamespaces(undefined, 77)).toBeUndefined();
  });

  test("refused with FAILED_PRECONDITION (UNIMPLEMENTED would make containerd retry with Task API v2), naming the container, the namespaces and the pid; allowed otherwise", () => {
    expect(() => refuseServerNamespaces("c1", spec([{ type: "network", path: "/proc/1234/ns/net" }]), 99)).not.toThrow();
    let e: unknown;
    try {
      refuseServerNamespaces("c1", spec([{ type: "ipc", path: "/proc/99/ns/ipc" }]), 99);
    } catch (err) {
      e = err;
    }
    expect(e).toBeInstanceOf(TtrpcError);
    expect((e as TtrpcError).code).toBe(Code.FAILED_PRECONDITION);
    expect((e as TtrpcError).message).toContain("container c1 would run under runc in the ipc namespaces of pid 99");
  });
});
