// A runc container never joins the namespaces of the process that serves it (what CRI's spec
// names under containerd's shim sandboxer, whose pod pid is ours): a wasm container gets its
// own, a native one its pod's holder's. What needs no runc: the specs, and the refusals.
import { describe, expect, test } from "bun:test";
import type { Runc } from "../../../src/linux/runc.ts";
import { namespacesOf, podNetwork, wasmNamespaces } from "../../../src/oci/pod-namespaces.ts";
import type { Spec } from "../../../src/oci/spec.ts";
import { holderSpec, PodHolders } from "../../../src/runtime-v2/pod-holder.ts";
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
    expect(wasmNamespaces(ns, { pid: 77 })).toEqual([
      { type: "pid" },
      { type: "network", path: "/proc/77/ns/net" },
      { type: "ipc" },
      { type: "uts" },
      { type: "mount" },
      { type: "cgroup", path: "/proc/5/ns/cgroup" },
    ]);
    expect(wasmNamespaces(ns, { pid: 6 })).toEqual(ns);
    expect(wasmNamespaces(undefined, { pid: 77 })).toBeUndefined();
    // A pod with a network namespace of its own: the network join is to it.
    expect(wasmNamespaces(ns, { pid: 77, netns: "/run/netns/cni-2" })?.find((n) => n.type === "network")).toEqual({
      type: "network",
      path: "/run/netns/cni-2",
    });
  });

  test("the pod's network: our network join becomes the pod's namespace; every other entry, and a spec joining another's network, stay", () => {
    const ns = [
      { type: "network", path: "/proc/77/ns/net" },
      { type: "ipc", path: "/proc/77/ns/ipc" },
    ];
    const pod = { pid: 77, netns: "/var/run/netns/cni-3" };
    expect(podNetwork(ns, pod)).toEqual([
      { type: "network", path: "/var/run/netns/cni-3" },
      { type: "ipc", path: "/proc/77/ns/ipc" },
    ]);
    // Applied twice, the same (the daemon rewrites the spec, then the holder reads it again).
    expect(podNetwork(podNetwork(ns, pod), pod)).toEqual(podNetwork(ns, pod));
    expect(podNetwork(ns, { pid: 77 })).toEqual(ns);
    const other = [{ type: "network", path: "/proc/5/ns/net" }];
    expect(podNetwork(other, pod)).toEqual(other);
    expect(podNetwork(undefined, pod)).toBeUndefined();
  });

  test("a native container whose spec joins none of ours runs from containerd's bundle as it is (the podsandbox path)", async () => {
    const holders = new PodHolders({ log: () => {}, pid: 99 });
    const noRunc = {} as Runc; // never called
    const spec = {
      ociVersion: "1.0.2",
      root: { path: "rootfs" },
      linux: { namespaces: [{ type: "ipc", path: "/proc/1234/ns/ipc" }] },
    } as unknown as Spec;
    expect(
      await holders.bundleFor({ id: "c1", bundle: "/b/c1", workDir: "/w/c1", stateDir: "/w", spec, runc: noRunc, runtimeOptions: null }),
    ).toBe("/b/c1");
  });

  test("one that joins ours but names no pod is refused with FAILED_PRECONDITION (UNIMPLEMENTED would make containerd retry with Task API v2)", async () => {
    const holders = new PodHolders({ log: () => {}, pid: 99 });
    const spec = {
      ociVersion: "1.0.2",
      root: { path: "rootfs" },
      linux: { namespaces: [{ type: "ipc", path: "/proc/99/ns/ipc" }] },
    } as unknown as Spec;
    const e = await holders
      .bundleFor({ id: "c1", bundle: "/b/c1", workDir: "/w/c1", stateDir: "/w", spec, runc: {} as Runc, runtimeOptions: null })
      .then(
        () => new Error("expected a refusal"),
        (err: unknown) => err,
      );
    expect(e).toBeInstanceOf(TtrpcError);
    expect((e as TtrpcError).code).toBe(Code.FAILED_PRECONDITION);
    expect((e as TtrpcError).message).toContain("container c1 would run under runc in the ipc namespaces of pid 99");
  });

  test("the holder's spec: new pid, ipc, uts and mount namespaces, the host's network, the pod's cgroup with the sandbox id, nothing that runs", () => {
    const template = {
      ociVersion: "1.2.0",
      process: { args: ["sh"], cwd: "/", user: { uid: 0, gid: 0 } },
      root: { path: "rootfs" },
      hostname: "node1",
      linux: {
        namespaces: [
          { type: "pid", path: "/proc/99/ns/pid" },
          { type: "network", path: "/proc/99/ns/net" },
          { type: "ipc", path: "/proc/99/ns/ipc" },
          { type: "uts", path: "/proc/99/ns/uts" },
          { type: "mount" },
        ],
        cgroupsPath: "/kubepods/pod-1/c1",
      },
    } as unknown as Spec;
    const h = holderSpec(template, "c1", "pod1", { pid: 99 });
    expect(h.linux?.namespaces).toEqual([{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }]);
    expect(h.linux?.cgroupsPath).toBe("/kubepods/pod-1/pod1");
    expect(h.hostname).toBe("node1");
    expect(h.root).toEqual({ path: "rootfs", readonly: true });
    expect(h.process.user).toEqual({ uid: 65534, gid: 65534 });
    // systemd's form of a cgroup path ends with the id too.
    const sd = holderSpec({ ...template, linux: { ...template.linux, cgroupsPath: "kubepods.slice:cri-containerd:c1" } }, "c1", "pod1", {
      pid: 99,
    });
    expect(sd.linux?.cgroupsPath).toBe("kubepods.slice:cri-containerd:pod1");
    // A network of the pod's own (not ours) is the holder's too.
    const own = holderSpec(
      {
        ...template,
        linux: {
          namespaces: [
            { type: "network", path: "/var/run/netns/cni-1" },
            { type: "ipc", path: "/proc/99/ns/ipc" },
          ],
        },
      },
      "c1",
      "pod1",
      { pid: 99 },
    );
    expect(own.linux?.namespaces).toContainEqual({ type: "network", path: "/var/run/netns/cni-1" });
    // Under the shim sandboxer, a pod with a network namespace of its own: CRI names ours, the holder joins the pod's.
    const podNet = holderSpec(template, "c1", "pod1", { pid: 99, netns: "/var/run/netns/cni-4", hostname: "web-1" });
    // The pod's hostname (a pause container's, under the podsandbox path), not the container's spec's.
    expect(podNet.hostname).toBe("web-1");
    // A host-network, hostIPC pod: no UTS, IPC or network namespace of the holder's (the node's stay), and no net.* sysctl (it would be the node's).
    const hostish = holderSpec(template, "c1", "pod1", {
      pid: 99,
      hostname: "web-1",
      node: ["network", "uts", "ipc"],
      sysctls: { "kernel.shm_rmid_forced": "1", "net.ipv4.ip_forward": "1" },
    });
    expect(hostish.linux?.namespaces).toEqual([{ type: "pid" }, { type: "mount" }]);
    expect(hostish.hostname).toBeUndefined();
    expect(hostish.linux?.sysctl).toEqual({ "kernel.shm_rmid_forced": "1" });
    // Its own network: the pod's sysctls, net.* too, are set in it.
    const own2 = holderSpec(template, "c1", "pod1", {
      pid: 99,
      netns: "/var/run/netns/cni-5",
      sysctls: { "net.ipv4.ip_forward": "1" },
      node: [],
    });
    expect(own2.linux?.sysctl).toEqual({ "net.ipv4.ip_forward": "1" });
    expect(podNet.linux?.namespaces).toEqual([
      { type: "pid" },
      { type: "ipc" },
      { type: "uts" },
      { type: "mount" },
      { type: "network", path: "/var/run/netns/cni-4" },
    ]);
  });
});
