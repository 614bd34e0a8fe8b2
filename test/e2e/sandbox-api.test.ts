// containerd's Sandbox API: containerd 2.x (the version scripts/containerd-versions.sh pins)
// whose CRI handler has `sandboxer = "shim"`, so no pause container is made. Shared mode
// (`wasmtimed`): the pod is the daemon's sandbox itself, with no process of its own at all.
// Normal mode (`wasmtime`): the pod is its shim server. crictl drives it as the kubelet would
// (test/support/cri.ts); pods use the host's network, or one of their own that CRI made and
// set up through CNI (Debian's bridge and host-local plugins) before CreateSandbox named it. Each
// step asserts what containerd's CRI sees (inspectp, pods, inspect, logs, statsp) and what the
// host has (processes in /proc and their namespaces, mounts, our state dirs, containerd's
// bundles, the daemon's sandboxes, network namespaces).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { SandboxDefinition } from "../../src/task/gen/containerd/runtime/sandbox/v1/sandbox.ts";
import { Client } from "../../src/ttrpc/index.ts";
import { writeImageArchive } from "../../tools/image/index.ts";
import { mountsUnder } from "../support/containerd.ts";
import { pinned2x } from "../support/containerd-versions.ts";
import {
  bridgeCni,
  CRI_IMAGES,
  type CriEnv,
  crictlPath,
  criEnv,
  HANDLER,
  K8S_NAMESPACE,
  type Pod,
  SHARED_HANDLER,
} from "../support/cri.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "../support/daemon.ts";
import { HTTP_IMAGE, runScript } from "../support/http-services.ts";
import { processes } from "../support/processes.ts";
import { REPO, WASM } from "../support/shim-env.ts";
import { until } from "../support/until.ts";

const T = 120_000;

const V2 = pinned2x();
const CONTAINERD = join(REPO, "build/containerd", V2, "bin/containerd");
/**
 * A CNI network for the pods that ask for one of their own: a bridge of this run's (n tells the
 * two suites' apart; ≤ 15 bytes) with the host as its gateway, so the test reaches pod IPs.
 */
function podNetworkCni(n: number) {
  const bridge = `bwsb${n}${(process.pid & 0xffff).toString(16)}`;
  const subnet = `10.${240 + n}.${process.pid % 250}.0/24`;
  return { bridge, subnet, cni: bridgeCni(bridge, subnet) };
}

/** The wasi:http handler component's image (imported into the CRI's namespace). */
async function importHttpImage(cri: CriEnv): Promise<void> {
  runScript("http-host.sh");
  runScript("build-http-components.sh");
  const archive = join(cri.dir, "http.tar");
  writeImageArchive(archive, {
    name: HTTP_IMAGE,
    files: [{ path: "/handler.wasm", source: join(WASM, "http", "handler.wasm") }],
    config: { entrypoint: ["/handler.wasm"], env: ["PATH=/"] },
  });
  const r = await cri.cd.ctr(["images", "import", archive], { namespace: K8S_NAMESPACE });
  if (r.code !== 0) throw new Error(`import ${HTTP_IMAGE}: ${r.stderr}`);
  await until("the CRI plugin to list the http image", async () => (await cri.crictlOk(["images", "-o", "json"])).includes(HTTP_IMAGE));
}

/** A network namespace's inode, as /proc/<pid>/ns/net names it ("net:[<ino>]") and as stat sees a bind mount of it. */
const netnsOfPid = (pid: number) => readlinkSync(`/proc/${pid}/ns/net`);
const netnsOfFile = (path: string) => `net:[${statSync(path).ino}]`;

/** CRI's network namespace files (bind mounts under /var/run/netns) whose namespace is `ns`. */
function netnsFilesOf(ns: string): string[] {
  const dir = "/var/run/netns";
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {}
  return names
    .map((n) => join(dir, n))
    .filter((p) => {
      try {
        return netnsOfFile(p) === ns;
      } catch {
        return false;
      }
    });
}

/** Processes (pids) in network namespace `ns`. */
function pidsInNetns(ns: string): number[] {
  return [...processes().keys()].filter((pid) => {
    try {
      return netnsOfPid(pid) === ns;
    } catch {
      return false;
    }
  });
}

/**
 * A pod with a network namespace of its own under the shim sandboxer, in either mode: CRI made
 * the namespace and its CNI network before CreateSandbox; a wasi:http service of the pod serves
 * at the pod's IP from inside it (shared mode: sockets of the daemon, made there; normal mode:
 * the executor under runc, which joined it); a native sidecar and its pod's holder are in it too;
 * stopp ends the holder, rmp leaves nothing (CRI removes the namespace; nothing of ours keeps
 * it). `roots`: the processes a holder is found under (our daemon and containerd, or the pod's server).
 */
async function ownNetworkPod(
  cri: CriEnv,
  o: { subnet: string; roots: (podId: string) => number[]; host: number; shared: boolean },
): Promise<void> {
  const p = await cri.runPod(`net-${o.shared ? "shared" : "normal"}`, { podNetwork: true });
  const status = JSON.parse(await cri.crictlOk(["inspectp", "-o", "json", p.id])).status;
  expect(status.state).toBe("SANDBOX_READY");
  expect(status.linux.namespaces.options.network).toBe("POD");
  const ip: string = status.network.ip;
  expect(ip.startsWith(o.subnet.replace(/0\/24$/, ""))).toBe(true);
  // No pause, no runc, no holder for a pod without native containers.
  expect(runcOrPauseUnder(o.roots(p.id))).toEqual([]);

  const svc = await cri.createContainer(p, {
    metadata: { name: "svc" },
    image: { image: HTTP_IMAGE },
    command: ["/handler.wasm"],
    envs: [{ key: "GREETING", value: `pod ${p.name}` }],
    log_path: "svc.log",
  });
  await cri.crictlOk(["start", svc]);
  await until("the service to serve", () =>
    readFileSync(join(p.logDir, "svc.log"), "utf8").includes("serving wasi:http on http://0.0.0.0:8080/"),
  );
  const r = await fetch(`http://${ip}:8080/env/GREETING`);
  expect([r.status, await r.text()]).toEqual([200, `pod ${p.name}`]);
  const svcPid = (await cri.inspect(svc)).info.pid as number;
  if (o.shared) expect(svcPid).toBe(o.host);

  const sidecar = await cri.createContainer(p, {
    metadata: { name: "sidecar" },
    image: { image: CRI_IMAGES.busybox },
    command: ["sh", "-c", "echo sidecar up; exec sleep 3600"],
    log_path: "sidecar.log",
  });
  await cri.crictlOk(["start", sidecar]);
  const side = (await cri.waitState(sidecar, "CONTAINER_RUNNING")).info.pid as number;
  const ns = netnsOfPid(side);
  expect(ns).not.toBe(netnsOfPid(o.host));
  // It is CRI's namespace of the pod, the one the pod's IP is on.
  expect(netnsFilesOf(ns).length).toBe(1);
  const addrs = Bun.spawnSync(["nsenter", `--net=/proc/${side}/ns/net`, "ip", "-4", "-o", "addr"], { stdout: "pipe" }).stdout.toString();
  expect(addrs).toContain(` ${ip}/`);
  if (!o.shared) expect(netnsOfPid(svcPid)).toBe(ns);
  const holders = runcOrPauseUnder(o.roots(p.id)).filter((c) => c.endsWith("runc init"));
  expect(holders.length).toBe(1);
  const holderPid = [...processes().entries()].find(
    ([pid, a]) => a.join(" ") === holders[0] && o.roots(p.id).some((r) => parentChainHas(pid, r)),
  )?.[0];
  expect(netnsOfPid(holderPid!)).toBe(ns);
  // Not a host-network pod: a UTS namespace of its own, the holder's, and CRI's files of the pod
  // (written at CreateSandbox) in the sidecar.
  expect(readlinkSync(`/proc/${side}/ns/uts`)).toBe(readlinkSync(`/proc/${holderPid}/ns/uts`));
  expect(readlinkSync(`/proc/${side}/ns/uts`)).not.toBe(readlinkSync(`/proc/${o.host}/ns/uts`));
  const podFiles = join(cri.cd.root, "io.containerd.grpc.v1.cri", "sandboxes", p.id);
  expect(readdirSync(podFiles).sort()).toEqual(["hostname", "hosts", "resolv.conf"]);
  expect(readFileSync(`/proc/${side}/root/etc/resolv.conf`, "utf8")).toBe(readFileSync(join(podFiles, "resolv.conf"), "utf8"));

  await cri.crictlOk(["stopp", p.id], { timeoutMs: 90_000 });
  expect(runcOrPauseUnder(o.roots(p.id))).toEqual([]);
  // CRI tore the network down and removed its file; nothing of ours is left in the namespace.
  await until("the pod's namespace to be gone", () => netnsFilesOf(ns).length === 0 && pidsInNetns(ns).length === 0);
  await cri.crictlOk(["rmp", p.id], { timeoutMs: 90_000 });
  expect(existsSync(podFiles)).toBe(false);
  const ids = [p.id, svc, sidecar];
  await until("nothing of the pod to run", () => processesNaming(ids).length === 0);
  expect(mountsUnder(cri.dir).filter((m) => ids.some((x) => m.includes(x)))).toEqual([]);
  expect([...entriesNamed(cri.cd.state, ids), ...entriesNamed(cri.cd.root, ids)]).toEqual([]);
  for (const id of ids) {
    expect(existsSync(join(containerStateDir(K8S_NAMESPACE), id))).toBe(false);
    expect(existsSync(join(runtimeRoot(K8S_NAMESPACE), id))).toBe(false);
    for (const d of cgroupDirs(p, id)) expect(existsSync(d)).toBe(false);
  }
}

/** Processes whose command line names any of `ids` (a shim's -id, runc's container id, a pause's bundle). */
function processesNaming(ids: string[]): string[] {
  return [...processes().values()].map((a) => a.join(" ")).filter((cmd) => ids.some((id) => cmd.includes(id)));
}

/** A process's parent, from /proc/<pid>/stat (its 4th field, after the command in parentheses). */
function parentOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return 0;
  }
}

/** Zombie children of `parent` (/proc/<pid>/stat: state Z): exits nobody reaped. */
function zombiesOf(parent: number): number[] {
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, "utf8");
        const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        return state === "Z" && Number(ppid) === parent;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Whether `root` is `pid` or one of its ancestors. */
function parentChainHas(pid: number, root: number): boolean {
  for (let p = pid, hops = 0; p > 1 && hops < 64; p = parentOf(p), hops++) if (p === root) return true;
  return false;
}

/**
 * runc, or a pause binary (the pause image's /pause), among the descendants of `roots` (our
 * containerd and our daemon: a pause container of the pod would be the daemon's child, as
 * the subreaper of what runc starts). Other suites on the machine have their own.
 */
function runcOrPauseUnder(roots: number[]): string[] {
  const all = processes();
  const under = (pid: number): boolean => roots.some((r) => parentChainHas(pid, r));
  return [...all.entries()].filter(([pid, a]) => /(^|\/)(runc|pause)$/.test(a[0] ?? "") && under(pid)).map(([, a]) => a.join(" "));
}

/** Paths under `dir` (at most 4 levels down) whose name is one of `ids`. */
function entriesNamed(dir: string, ids: string[], depth = 4): string[] {
  if (depth === 0) return [];
  let entries: import("node:fs").Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => {
    const p = join(dir, e.name);
    if (ids.includes(e.name)) return [p];
    return e.isDirectory() ? entriesNamed(p, ids, depth - 1) : [];
  });
}

/** A container's cgroup directories under its pod's parent (cgroupfs driver), v1 or v2 layout. */
function cgroupDirs(pod: Pod, id: string): string[] {
  if (existsSync("/sys/fs/cgroup/cgroup.controllers")) return [join("/sys/fs/cgroup", pod.cgroupParent, id)];
  return ["memory", "cpu", "pids"].map((ctl) => join("/sys/fs/cgroup", ctl, pod.cgroupParent, id));
}

test("prerequisites: root, runc, crictl and containerd 2.x", () => {
  expect(process.getuid?.()).toBe(0);
  expect(Bun.which("runc")).not.toBeNull();
  for (const f of [crictlPath(), CONTAINERD]) expect(`${f}: ${existsSync(f)}`).toBe(`${f}: true`);
});

describe(`the Sandbox API on containerd ${V2}: handler ${SHARED_HANDLER} with sandboxer "shim" (shared mode)`, () => {
  let cri: CriEnv;
  let shd: Daemon;
  const net = podNetworkCni(0);

  beforeAll(async () => {
    shd = await startDaemon(mkdtempSync("/tmp/bwsb-"));
    cri = await criEnv({
      binary: CONTAINERD,
      handler: SHARED_HANDLER,
      runtime: SHARED_RUNTIME,
      env: shd.env,
      sandboxer: "shim",
      cni: net.cni,
    });
    await importHttpImage(cri);
  }, T);

  afterAll(async () => {
    await cri?.stop();
    Bun.spawnSync(["ip", "link", "del", net.bridge]);
    if (shd) {
      const code = await shd.stop("SIGTERM");
      rmSync(dirname(shd.socket), { recursive: true, force: true });
      expect(code).toBe(0);
    }
  }, T);

  const runcOrPause = () => runcOrPauseUnder([cri.cd.pid, shd.pid]);
  const sandboxesOf = (podId: string) => shd.sandboxesOf(K8S_NAMESPACE, podId);

  /** The Sandbox API on the pod's socket in the daemon, as containerd's shim sandboxer calls it. */
  async function sandboxApi(podId: string, f: (sb: any) => Promise<any>): Promise<any> {
    const [sb] = await sandboxesOf(podId);
    if (!sb) throw new Error(`the daemon has no sandbox for pod ${podId}`);
    const client = await Client.connect(sb.address.replace(/^unix:\/\//, ""), { timeoutMs: 2000 });
    try {
      return await f(client.service(SandboxDefinition));
    } finally {
      client.close();
    }
  }

  let pod: Pod;
  const containers: string[] = [];

  test(
    "runp: the pod is READY, a sandbox of the daemon with no container, and no process of its own (no shim, pause or runc)",
    async () => {
      pod = await cri.runPod("main");
      const status = JSON.parse(await cri.crictlOk(["inspectp", "-o", "json", pod.id])).status;
      expect(status.state).toBe("SANDBOX_READY");
      expect(status.runtimeHandler).toBe(SHARED_HANDLER);
      expect(status.linux.namespaces.options.network).toBe("NODE");
      const pods = JSON.parse(await cri.crictlOk(["pods", "-o", "json", "--id", pod.id])).items;
      expect(pods.map((p: any) => p.state)).toEqual(["SANDBOX_READY"]);

      // The pod is the daemon's sandbox: it holds no container (no pause), and serves the
      // Sandbox API, where containerd created and started it with the pod's own settings.
      expect((await sandboxesOf(pod.id)).map((s) => s.containers)).toEqual([0]);
      const st = await sandboxApi(pod.id, (sb) => sb.sandboxStatus({ sandboxId: pod.id, verbose: false }));
      expect(st.state).toBe("SANDBOX_READY");
      expect(st.pid).toBe(shd.pid);
      const platform = await sandboxApi(pod.id, (sb) => sb.platform({ sandboxId: pod.id }));
      expect(platform.platform.os).toBe("linux");
      expect(platform.platform.architecture).toBe(process.arch === "x64" ? "amd64" : process.arch);

      // Not a process for the pod: the thin shim's `start` is gone, no pause, no runc.
      expect(processesNaming([pod.id])).toEqual([]);
      expect(runcOrPause()).toEqual([]);
      // No container of the pod's in containerd, and no pause image pulled or used.
      const ctrs = await cri.cd.ctr(["containers", "ls", "-q"], { namespace: K8S_NAMESPACE });
      expect(ctrs.stdout.split("\n").filter(Boolean)).toEqual([]);
      // Nothing mounted for the pod: a pause container's rootfs and /dev/shm are what the podsandbox path mounts.
      expect(mountsUnder(cri.dir).filter((m) => m.includes(pod.id))).toEqual([]);
    },
    T,
  );

  test(
    "create + start a wasm container: its logs, its exit 0, still no process of the pod's; a second one runs until stopped",
    async () => {
      const hello = await cri.createContainer(pod, {
        metadata: { name: "hello" },
        image: { image: CRI_IMAGES.demo },
        args: ["echo", "hello"],
        log_path: "hello.log",
      });
      containers.push(hello);
      await cri.crictlOk(["start", hello]);
      const st = await cri.waitState(hello, "CONTAINER_EXITED");
      expect(st.status.exitCode).toBe(0);
      expect(st.status.reason).toBe("Completed");
      const logs = await cri.crictl(["logs", hello]);
      expect(logs.code).toBe(0);
      expect(logs.stdout).toBe("hello\nexiting\n");

      expect(processesNaming([pod.id, hello])).toEqual([]);
      expect(runcOrPause()).toEqual([]);

      const three = await cri.createContainer(pod, {
        metadata: { name: "exit3" },
        image: { image: CRI_IMAGES.demo },
        args: ["exit", "3"],
        log_path: "exit3.log",
      });
      containers.push(three);
      await cri.crictlOk(["start", three]);
      const st3 = await cri.waitState(three, "CONTAINER_EXITED");
      expect(st3.status.exitCode).toBe(3);
      expect(st3.status.reason).toBe("Error");

      // The pod stays READY with all its containers exited (Task Shutdown after each Delete
      // does not end a Sandbox-API pod).
      expect(JSON.parse(await cri.crictlOk(["inspectp", "-o", "json", pod.id])).status.state).toBe("SANDBOX_READY");
      expect((await sandboxesOf(pod.id)).length).toBe(1);
    },
    T,
  );

  test(
    "containerd restarts under a running pod: it reconnects to the sandbox, the pod stays READY, the module keeps running; rmp --force leaves nothing",
    async () => {
      const p = await cri.runPod("restart");
      const id = await cri.createContainer(p, { metadata: { name: "daemon" }, image: { image: CRI_IMAGES.demo }, log_path: "d.log" });
      await cri.crictlOk(["start", id]);
      await cri.waitState(id, "CONTAINER_RUNNING");
      await until("the module's first output", () => readFileSync(join(p.logDir, "d.log"), "utf8").length > 0);
      await cri.restart();
      expect(JSON.parse(await cri.crictlOk(["inspectp", "-o", "json", p.id])).status.state).toBe("SANDBOX_READY");
      expect((await cri.inspect(id)).status.state).toBe("CONTAINER_RUNNING");
      const size = readFileSync(join(p.logDir, "d.log"), "utf8").length;
      await until("more output after the restart", () => readFileSync(join(p.logDir, "d.log"), "utf8").length > size);
      // The same sandbox of the daemon, still holding the container.
      expect((await sandboxesOf(p.id)).map((s) => s.containers)).toEqual([1]);
      await cri.crictlOk(["rmp", "--force", p.id], { timeoutMs: 90_000 });
      await until("the daemon to close the pod's sandbox", async () => (await sandboxesOf(p.id)).length === 0);
      const ids = [p.id, id];
      expect(processesNaming(ids)).toEqual([]);
      expect(runcOrPause()).toEqual([]);
      expect(mountsUnder(cri.dir).filter((m) => ids.some((x) => m.includes(x)))).toEqual([]);
      expect([...entriesNamed(cri.cd.state, ids), ...entriesNamed(cri.cd.root, ids)]).toEqual([]);
    },
    T,
  );

  test(
    "a native sidecar: it runs in a holder of the pod's namespaces (IPC, PID; the host's network and UTS), made for it alone; stopp removes the holder, rmp leaves nothing",
    async () => {
      const p = await cri.runPod("side");
      // A wasm container first: no holder for it.
      const hello = await cri.createContainer(p, {
        metadata: { name: "hello" },
        image: { image: CRI_IMAGES.demo },
        args: ["echo", "hi"],
        log_path: "h.log",
      });
      await cri.crictlOk(["start", hello]);
      expect((await cri.waitState(hello, "CONTAINER_EXITED")).status.exitCode).toBe(0);
      expect(runcOrPause()).toEqual([]);

      const sidecar = await cri.createContainer(p, {
        metadata: { name: "sidecar" },
        image: { image: CRI_IMAGES.busybox },
        command: ["sh", "-c", "echo sidecar up; exec sleep 3600"],
        log_path: "sidecar.log",
      });
      await cri.crictlOk(["start", sidecar]);
      const running = await cri.waitState(sidecar, "CONTAINER_RUNNING");
      await until("the sidecar's line", async () => (await cri.crictl(["logs", sidecar])).stdout === "sidecar up\n");
      // One holder: runc's init of a container created and never started, under the daemon.
      const holders = runcOrPause();
      expect(holders).toEqual([expect.stringMatching(/runc init$/)]);
      const holderPid = [...processes().entries()].find(([pid, a]) => a.join(" ") === holders[0] && parentChainHas(pid, shd.pid))?.[0];
      expect(holderPid).toBeGreaterThan(0);
      const ns = (pid: number, t: string) => readlinkSync(`/proc/${pid}/ns/${t}`);
      const side = running.info.pid as number;
      // A host-network pod has the node's network and UTS namespaces, as its pause would.
      for (const t of ["net", "uts"]) expect(`${t} ${ns(side, t)}`).toBe(`${t} ${ns(shd.pid, t)}`);
      for (const t of ["ipc", "pid"]) {
        expect(`${t} ${ns(side, t)}`).toBe(`${t} ${ns(holderPid!, t)}`);
        expect(`${t} ${ns(side, t)}`).not.toBe(`${t} ${ns(shd.pid, t)}`);
      }
      expect(JSON.parse(await cri.crictlOk(["inspectp", "-o", "json", p.id])).status.state).toBe("SANDBOX_READY");

      await cri.crictlOk(["stopp", p.id], { timeoutMs: 90_000 });
      expect((await cri.inspect(sidecar)).status.state).toBe("CONTAINER_EXITED");
      expect(runcOrPause()).toEqual([]);
      // The holder's exit was reaped (the daemon is the subreaper of what runc starts).
      await until("no zombie child of the daemon", () => zombiesOf(shd.pid).length === 0);
      expect(existsSync(`/proc/${holderPid}`)).toBe(false);
      await cri.crictlOk(["rmp", p.id], { timeoutMs: 90_000 });
      await until("the daemon to close the pod's sandbox", async () => (await sandboxesOf(p.id)).length === 0);
      const ids = [p.id, hello, sidecar];
      expect(processesNaming(ids)).toEqual([]);
      expect(mountsUnder(cri.dir).filter((m) => ids.some((x) => m.includes(x)))).toEqual([]);
      expect([...entriesNamed(cri.cd.state, ids), ...entriesNamed(cri.cd.root, ids)]).toEqual([]);
      for (const id of ids) {
        expect(existsSync(join(containerStateDir(K8S_NAMESPACE), id))).toBe(false);
        expect(existsSync(join(runtimeRoot(K8S_NAMESPACE), id))).toBe(false);
        for (const d of cgroupDirs(p, id)) expect(existsSync(d)).toBe(false);
      }
    },
    T,
  );

  test(
    "a pod with a network namespace of its own (CNI): no process for it; a wasi:http service serves at the pod's IP, its sockets the daemon's in the pod's namespace; a native sidecar and its holder join that namespace; rmp leaves nothing, the namespace included",
    () => ownNetworkPod(cri, { subnet: net.subnet, roots: () => [cri.cd.pid, shd.pid], host: shd.pid, shared: true }),
    T,
  );

  test(
    "a running wasm container: pod stats through SandboxMetrics; stopp stops it and the pod is NOTREADY; rmp leaves nothing",
    async () => {
      const daemon = await cri.createContainer(pod, {
        metadata: { name: "daemon" },
        image: { image: CRI_IMAGES.demo },
        log_path: "daemon.log",
      });
      containers.push(daemon);
      await cri.crictlOk(["start", daemon]);
      const running = await cri.waitState(daemon, "CONTAINER_RUNNING");
      // The task's pid is the daemon's: the module runs on a thread of the daemon.
      expect(running.info.pid).toBe(shd.pid);
      expect(processesNaming([pod.id, daemon])).toEqual([]);
      expect(runcOrPause()).toEqual([]);

      // crictl statsp: CRI's PodSandboxStats, whose cpu and memory are SandboxMetrics'.
      const podStats = await until("the pod's stats", async () => {
        const r = await cri.crictl(["statsp", "-o", "json", "--id", pod.id]);
        if (r.code !== 0) throw new Error(`crictl statsp: ${r.stderr}\n${cri.cd.logTail(20)}`);
        const s = JSON.parse(r.stdout).stats?.[0];
        return s?.linux?.cpu?.usageCoreNanoSeconds?.value > 0 ? s : undefined;
      });
      expect(podStats.attributes.id).toBe(pod.id);
      expect(Number(podStats.linux.memory.workingSetBytes?.value ?? podStats.linux.memory.usageBytes?.value)).toBeGreaterThan(0);

      await cri.crictlOk(["stopp", pod.id], { timeoutMs: 90_000 });
      const after = await cri.inspect(daemon);
      expect(after.status.state).toBe("CONTAINER_EXITED");
      const pst = await until("the pod to be NOTREADY", async () => {
        const s = JSON.parse(await cri.crictlOk(["inspectp", "-o", "json", pod.id])).status;
        return s.state === "SANDBOX_NOTREADY" ? s : undefined;
      });
      expect(pst.state).toBe("SANDBOX_NOTREADY");

      await cri.crictlOk(["rmp", pod.id], { timeoutMs: 90_000 });
      const pods = JSON.parse(await cri.crictlOk(["pods", "-o", "json", "--id", pod.id]));
      expect(pods.items ?? []).toEqual([]);
      // ShutdownSandbox closed the daemon's sandbox, and its socket went with it.
      await until("the daemon to close the pod's sandbox", async () => (await sandboxesOf(pod.id)).length === 0);
      const ids = [pod.id, ...containers];
      expect(processesNaming(ids)).toEqual([]);
      expect(runcOrPause()).toEqual([]);
      expect(mountsUnder(cri.dir).filter((m) => ids.some((id) => m.includes(id)))).toEqual([]);
      expect(readdirSync(join(dirname(shd.socket), "sandboxes")).filter((f) => f.endsWith(".sock"))).toEqual([]);
      for (const id of ids) {
        expect(existsSync(join(containerStateDir(K8S_NAMESPACE), id))).toBe(false);
        expect(existsSync(join(runtimeRoot(K8S_NAMESPACE), id))).toBe(false);
      }
      // containerd's bundles for the pod (the shim sandboxer's) and its containers are gone too.
      expect([...entriesNamed(cri.cd.state, ids), ...entriesNamed(cri.cd.root, ids)]).toEqual([]);
    },
    T,
  );
});

describe(`the Sandbox API on containerd ${V2}: handler ${HANDLER} with sandboxer "shim" (normal mode)`, () => {
  let cri: CriEnv;
  const net = podNetworkCni(1);

  beforeAll(async () => {
    cri = await criEnv({ binary: CONTAINERD, sandboxer: "shim", cni: net.cni });
    await importHttpImage(cri);
  }, T);

  afterAll(async () => {
    await cri?.stop();
    Bun.spawnSync(["ip", "link", "del", net.bridge]);
  }, T);

  /** Our shim processes containerd started for `id` (their -id argument). */
  const shimsFor = (id: string) =>
    [...processes().values()].filter(
      (a) => /containerd-shim-wasmtime-v1$/.test(a[0] ?? "") && a.includes(cri.cd.address) && a[a.indexOf("-id") + 1] === id,
    );
  /** The pids of those, and containerd's. */
  const serverPids = (id: string) => [
    cri.cd.pid,
    ...[...processes().entries()]
      .filter(([, a]) => /containerd-shim-wasmtime-v1$/.test(a[0] ?? "") && a.includes(cri.cd.address) && a[a.indexOf("-id") + 1] === id)
      .map(([pid]) => pid),
  ];

  test(
    "runp: READY, the pod is one shim server (no pause); wasm containers run under runc in namespaces of their own but the host's network; a native sidecar in the pod's holder; rmp leaves nothing",
    async () => {
      const pod = await cri.runPod("solo");
      expect(JSON.parse(await cri.crictlOk(["inspectp", "-o", "json", pod.id])).status.state).toBe("SANDBOX_READY");
      const servers = shimsFor(pod.id);
      expect(servers.map((a) => a.at(-1))).toEqual(["serve"]);
      expect(runcOrPauseUnder([cri.cd.pid])).toEqual([]);
      // What StartSandbox answered as the pod's pid is the server's (CRI builds the namespaces from it).
      const serverPid = [...processes().entries()].find(([, a]) => a.join(" ") === servers[0]?.join(" "))?.[0];
      expect(serverPid).toBeGreaterThan(0);

      const hello = await cri.createContainer(pod, {
        metadata: { name: "hello" },
        image: { image: CRI_IMAGES.demo },
        args: ["echo", "hello"],
        log_path: "hello.log",
      });
      await cri.crictlOk(["start", hello]);
      const st = await cri.waitState(hello, "CONTAINER_EXITED");
      expect(st.status.exitCode).toBe(0);
      expect((await cri.crictl(["logs", hello])).stdout).toBe("hello\nexiting\n");

      // A running one: the executor (under runc) is in the host's network namespace (a
      // host-network pod's), not in the server's IPC, UTS or PID namespaces (the host's).
      const daemon = await cri.createContainer(pod, {
        metadata: { name: "daemon" },
        image: { image: CRI_IMAGES.demo },
        log_path: "daemon.log",
      });
      await cri.crictlOk(["start", daemon]);
      const running = await cri.waitState(daemon, "CONTAINER_RUNNING");
      const pid = running.info.pid as number;
      expect(pid).toBeGreaterThan(0);
      expect(pid).not.toBe(serverPid);
      const ns = (p: number | string, t: string) => readlinkSync(`/proc/${p}/ns/${t}`);
      expect(ns(pid, "net")).toBe(ns(serverPid!, "net"));
      for (const t of ["ipc", "uts", "pid"]) expect(`${t} ${ns(pid, t)}`).not.toBe(`${t} ${ns(serverPid!, t)}`);

      // A native sidecar joins the pod's holder (made now), not the server's namespaces.
      const sidecar = await cri.createContainer(pod, {
        metadata: { name: "sidecar" },
        image: { image: CRI_IMAGES.busybox },
        command: ["sh", "-c", "echo sidecar up; exec sleep 3600"],
        log_path: "sidecar.log",
      });
      await cri.crictlOk(["start", sidecar]);
      const side = (await cri.waitState(sidecar, "CONTAINER_RUNNING")).info.pid as number;
      const holders = runcOrPauseUnder([serverPid!]).filter((c) => c.endsWith("runc init"));
      expect(holders.length).toBe(1);
      const holderPid = [...processes().entries()].find(([p, a]) => a.join(" ") === holders[0] && parentChainHas(p, serverPid!))?.[0];
      // A host-network pod has the node's network and UTS namespaces, as its pause would.
      for (const t of ["net", "uts"]) expect(`${t} ${ns(side, t)}`).toBe(`${t} ${ns(serverPid!, t)}`);
      for (const t of ["ipc", "pid"]) {
        expect(`${t} ${ns(side, t)}`).toBe(`${t} ${ns(holderPid!, t)}`);
        expect(`${t} ${ns(side, t)}`).not.toBe(`${t} ${ns(serverPid!, t)}`);
      }
      expect(shimsFor(pod.id).length).toBe(1);

      await cri.crictlOk(["stopp", pod.id], { timeoutMs: 90_000 });
      expect((await cri.inspect(daemon)).status.state).toBe("CONTAINER_EXITED");
      expect((await cri.inspect(sidecar)).status.state).toBe("CONTAINER_EXITED");
      expect(runcOrPauseUnder([serverPid!])).toEqual([]);
      await cri.crictlOk(["rmp", pod.id], { timeoutMs: 90_000 });
      // ShutdownSandbox: the server exits, and containerd's `shim delete` finds nothing.
      await until("the pod's server to exit", () => shimsFor(pod.id).length === 0);
      const ids = [pod.id, hello, daemon, sidecar];
      expect(processesNaming(ids)).toEqual([]);
      expect(runcOrPauseUnder([cri.cd.pid])).toEqual([]);
      expect(mountsUnder(cri.dir).filter((m) => ids.some((id) => m.includes(id)))).toEqual([]);
      for (const id of ids) {
        expect(existsSync(join(containerStateDir(K8S_NAMESPACE), id))).toBe(false);
        expect(existsSync(join(runtimeRoot(K8S_NAMESPACE), id))).toBe(false);
      }
      expect([...entriesNamed(cri.cd.state, ids), ...entriesNamed(cri.cd.root, ids)]).toEqual([]);
      // The wasm containers' cgroups (runc made them under the pod's parent) are gone.
      for (const id of [pod.id, hello, daemon, sidecar]) for (const d of cgroupDirs(pod, id)) expect(existsSync(d)).toBe(false);
    },
    T,
  );

  test(
    "a pod with a network namespace of its own (CNI): a wasi:http service serves at the pod's IP from its executor, under runc in that namespace; a native sidecar and its holder join it too; rmp leaves nothing, the namespace included",
    () => ownNetworkPod(cri, { subnet: net.subnet, roots: serverPids, host: process.pid, shared: false }),
    T,
  );
});
