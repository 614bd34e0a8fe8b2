// The files CRI mounts into a pod's containers, written by the Sandbox service for a pod of the
// shim sandboxer: where (CRI's sandbox directory, found from containerd's bundle), what (the
// pod's hostname, the node's hosts, the pod's DNS settings), and their removal.
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { CreateSandboxRequest } from "../../../src/task/gen/containerd/runtime/sandbox/v1/sandbox.ts";
import { PodSandboxConfig } from "../../../src/task/gen/k8s/cri/v1/pod_sandbox_config.ts";
import { criSandboxDir, removePodFiles, resolvConf, writePodFiles } from "../../../src/task/pod-files.ts";
import { SandboxService } from "../../../src/task/sandbox-service.ts";
import type { TaskService } from "../../../src/task/task-service.ts";

let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

/** containerd's layout: a state dir with the sandbox's bundle, whose `work` link points into the root. */
function layout(id: string) {
  const top = mkdtempSync("/tmp/bw-podfiles-");
  dirs.push(top);
  const root = join(top, "root");
  // The shim sandbox controller's bundle (containerd 2.x), and its work dir under the root.
  const work = join(root, "io.containerd.sandbox.controller.v1.shim", "k8s.io", id);
  const bundle = join(top, "state", "io.containerd.sandbox.controller.v1.shim", "k8s.io", id);
  mkdirSync(work, { recursive: true });
  mkdirSync(join(bundle, "rootfs"), { recursive: true });
  symlinkSync(work, join(bundle, "work"));
  return { root, bundle, cri: join(root, "io.containerd.grpc.v1.cri", "sandboxes", id) };
}

describe("the pod's files", () => {
  test("CRI's sandbox directory is found from the bundle's work link; no link, or another layout: none", () => {
    const l = layout("p1");
    const log = () => {};
    expect(criSandboxDir(l.bundle, "p1", log)).toBe(l.cri);
    expect(criSandboxDir(l.bundle, "p2", log)).toBeUndefined();
    expect(criSandboxDir("/nonexistent/p1", "p1", log)).toBeUndefined();
  });

  test("no CRI directory found: a warning says the files were not written and why; none when it is found", () => {
    const l = layout("p1");
    const logged: [string, string | undefined][] = [];
    const log = (msg: string, level?: string) => logged.push([msg, level]);
    criSandboxDir(l.bundle, "p1", log);
    expect(logged).toEqual([]);
    criSandboxDir("/nonexistent/p1", "p1", log);
    criSandboxDir(l.bundle, "p2", log);
    expect(logged.map(([, level]) => level)).toEqual(["warning", "warning"]);
    expect(logged[0]?.[0]).toStartWith(
      "sandbox p1: the pod's hostname, hosts, resolv.conf not written (CRI mounts none of them): no work link",
    );
    expect(logged[1]?.[0]).toBe(
      `sandbox p2: the pod's hostname, hosts, resolv.conf not written (CRI mounts none of them): the bundle's work link points to ${join(l.root, "io.containerd.sandbox.controller.v1.shim", "k8s.io", "p1")}, not to <containerd root>/<plugin>/<namespace>/p2`,
    );
  });

  test("resolv.conf as containerd writes a DNSConfig: search, one nameserver line each, options", () => {
    expect(resolvConf({ servers: ["8.8.8.8", "1.1.1.1"], searches: ["a.local", "b"], options: ["ndots:5", "edns0"] })).toBe(
      "search a.local b\nnameserver 8.8.8.8\nnameserver 1.1.1.1\noptions ndots:5 edns0\n",
    );
    expect(resolvConf({ servers: [], searches: [], options: [] })).toBe("");
  });

  test("written: the pod's hostname (else the node's), the node's hosts, the DNS settings (else the node's resolv.conf); removed with the directory", () => {
    const l = layout("p1");
    writePodFiles(l.cri, { hostname: "web-0", dns: { servers: ["10.0.0.10"], searches: [], options: [] } });
    expect(readFileSync(join(l.cri, "hostname"), "utf8")).toBe("web-0\n");
    expect(readFileSync(join(l.cri, "hosts"), "utf8")).toBe(readFileSync("/etc/hosts", "utf8"));
    expect(readFileSync(join(l.cri, "resolv.conf"), "utf8")).toBe("nameserver 10.0.0.10\n");
    removePodFiles(l.cri);
    expect(existsSync(l.cri)).toBe(false);
    writePodFiles(l.cri, { hostname: "" });
    expect(readFileSync(join(l.cri, "hostname"), "utf8")).toBe(`${hostname()}\n`);
    expect(readFileSync(join(l.cri, "resolv.conf"), "utf8")).toBe(readFileSync("/etc/resolv.conf", "utf8"));
  });

  test("the Sandbox service writes them at CreateSandbox of a CRI pod and removes them at ShutdownSandbox", async () => {
    const l = layout("p1");
    const tasks = { list: () => [] } as unknown as TaskService;
    const sb = new SandboxService({
      tasks,
      pid: 1,
      metrics: () => ({ typeUrl: "", value: new Uint8Array() }),
      log: () => {},
      onShutdown: () => {},
    });
    const config = PodSandboxConfig.fromPartial({ hostname: "h1", dnsConfig: { servers: ["10.0.0.10"], searches: ["s"], options: [] } });
    await sb.createSandbox(
      CreateSandboxRequest.fromPartial({
        sandboxId: "p1",
        bundlePath: l.bundle,
        options: { typeUrl: PodSandboxConfig.$type, value: PodSandboxConfig.encode(config).finish() },
      }),
    );
    expect(readFileSync(join(l.cri, "hostname"), "utf8")).toBe("h1\n");
    expect(readFileSync(join(l.cri, "resolv.conf"), "utf8")).toBe("search s\nnameserver 10.0.0.10\n");
    await sb.shutdownSandbox({ sandboxId: "p1" });
    expect(existsSync(l.cri)).toBe(false);
  });
});
