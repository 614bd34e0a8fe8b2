// Attack suite, network and users (issue 16, items 5 and 6), in both modes through the CRI, on
// containerd 1.6 and the pinned 2.x (test/support/containerd-versions.ts): normal mode (handler
// wasmtime → io.containerd.wasmtime.v1: an executor per container under runc) and shared mode
// (handler wasmtimed → io.containerd.wasmtimed.v1: the containerd-wasmtimed daemon, root, runs
// every module on threads of its own). Pods get a network of their own from Debian's CNI plugins
// (bridge, host-local, loopback), as a cluster would give them.
//
// Network. A pod's wasi:http service (test/wasm/http/handler.c, /fetch/<host:port>/) asks for a
// server the test binds on the host's 127.0.0.1: it must not reach it (502), since its sockets
// are the pod's namespace's; a server on the pod network's gateway is reached, and sees the
// request come from the pod's IP. A container that asks for a network of its own without naming
// one (`ctr run` without --net-host) reaches nothing either.
// Users. A container with process.user 1000:1000 (CRI run_as_user, run_as_group) and
// supplemental group 2000 cannot create a file in a root-owned 0755 volume directory (EACCES),
// can in a 1000-owned one, in a root:2000 2775 one and in its image's /tmp (1777), and what it
// creates is owned 1000:1000 (1000:2000 in the setgid directory); once removed, nothing of the
// containers is left mounted.
// Needs root, containerd, runc, ip, nsenter, the CNI plugins (scripts/setup.sh).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { writeImageArchive } from "../../tools/image/index.ts";
import { CONTAINERDS, runcShimPath } from "../support/containerd-versions.ts";
import { bridgeCni, CNI_BIN, CRI_IMAGES, type CriEnv, criEnv, HANDLER, K8S_NAMESPACE, SHARED_HANDLER } from "../support/cri.ts";
import { fileText, waitFile } from "../support/ctr-tasks.ts";
import { type Daemon, SHARED_RUNTIME, startDaemon } from "../support/daemon.ts";
import { freePort, runScript } from "../support/http-services.ts";
import { REPO, RUNTIME, WASM } from "../support/shim-env.ts";

const canRun =
  process.getuid?.() === 0 &&
  existsSync("/usr/bin/containerd") &&
  !!Bun.which("runc") &&
  !!Bun.which("nsenter") &&
  !!Bun.which("ip") &&
  ["bridge", "host-local", "loopback"].every((p) => existsSync(join(CNI_BIN, p)));
test("prerequisites: root, containerd, runc, nsenter, ip, the CNI plugins", () => expect(canRun).toBe(true));

const T = 120_000;
const IMAGE = "docker.io/library/bunwasi-attack-net:latest";
const BUN = join(REPO, "node_modules/.bin/bun");

function run(argv: string[]): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")} → ${r.exitCode}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/**
 * GET `url` from inside the network namespace `netns` (a path): "<status> <body>", or "failed:
 * <why>". Asynchronous: the server the request may reach is this process's own.
 */
async function getIn(netns: string, url: string): Promise<string> {
  const script = `try { const r = await fetch(${JSON.stringify(url)}); console.log(r.status, await r.text()) } catch (e) { console.log("failed:", e.code ?? e.message) }`;
  const p = Bun.spawn(["nsenter", `--net=${netns}`, BUN, "-e", script], { stdout: "pipe", stderr: "inherit" });
  const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  if (code !== 0) throw new Error(`nsenter … fetch ${url} → ${code}`);
  return out.trim();
}

const MODES = [
  { mode: "normal", handler: HANDLER, runtime: RUNTIME },
  { mode: "shared", handler: SHARED_HANDLER, runtime: SHARED_RUNTIME },
] as const;
/** Each containerd in each mode. */
const CASES = CONTAINERDS.flatMap((c) => MODES.map((m) => ({ containerd: c.name, binary: c.binary, ...m })));
test("prerequisites: each containerd, and a 2.x's own runc shim (scripts/containerd-versions.sh)", () => {
  for (const c of CONTAINERDS) {
    expect(`${c.binary}: ${existsSync(c.binary)}`).toBe(`${c.binary}: true`);
    expect(() => runcShimPath(c.binary)).not.toThrow();
  }
});

for (const [n, m] of CASES.entries()) {
  describe(`attack: network and users, ${m.mode} mode (crictl, containerd ${m.containerd}, handler ${m.handler})`, () => {
    let dir: string;
    let daemon: Daemon | undefined;
    let cri: CriEnv;
    // The CNI bridge (≤ 15 bytes) and the pods' subnet, per run and mode.
    const bridge = `bwa${n}${(process.pid & 0xfffff).toString(16)}`;
    const net = `10.${240 + n}.${process.pid % 250}`;
    const gateway = `${net}.1`;
    let seq = 0;
    const name = (what: string) => `${what}-${m.mode}-${seq++}`;

    beforeAll(async () => {
      runScript("http-host.sh");
      runScript("build-http-components.sh");
      runScript("build-shim.sh");
      dir = mkdtempSync("/tmp/bwa-");
      if (m.mode === "shared") daemon = await startDaemon(join(dir, "d"));
      cri = await criEnv({
        binary: m.binary,
        handler: m.handler,
        runtime: m.runtime,
        ...(daemon ? { env: daemon.env } : {}),
        // The host takes the gateway address: the test's "allowed" server listens there.
        cni: bridgeCni(bridge, `${net}.0/24`),
      });
      const archive = join(dir, "net.tar");
      writeImageArchive(archive, {
        name: IMAGE,
        files: [{ path: "/handler.wasm", source: join(WASM, "http", "handler.wasm") }],
        config: { entrypoint: ["/handler.wasm"], env: ["PATH=/"] },
      });
      const r = await cri.cd.ctr(["images", "import", archive], { namespace: K8S_NAMESPACE });
      if (r.code !== 0) throw new Error(`import: ${r.stderr}`);
      const deadline = Date.now() + 20_000;
      while (!(await cri.crictlOk(["images", "-o", "json"])).includes(IMAGE)) {
        if (Date.now() > deadline) throw new Error("the CRI plugin does not list the image");
        await Bun.sleep(100);
      }
    }, 1_800_000);

    afterAll(async () => {
      await cri?.stop();
      await daemon?.stop("SIGTERM");
      Bun.spawnSync(["ip", "link", "del", bridge]);
      if (dir) rmSync(dir, { recursive: true, force: true });
    }, T);

    const diagnostics = () => (daemon ? `\n--- daemon ---\n${daemon.log().slice(-3000)}` : "");

    test(
      `${m.mode} mode: a pod's wasi:http service cannot reach a server on the host's 127.0.0.1 (502); it reaches the pod network's gateway, from the pod's IP`,
      async () => {
        const secret = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("the host's loopback secret") });
        const podName = name("net");
        const pod = await cri.runPod(podName, { podNetwork: true });
        // The bridge and its gateway address exist once CNI set up the first pod.
        const seen = Bun.serve({ hostname: gateway, port: 0, fetch: (req, s) => new Response(`from ${s.requestIP(req)?.address}`) });
        try {
          const id = await cri.createContainer(pod, {
            metadata: { name: "svc" },
            image: { image: IMAGE },
            command: ["/handler.wasm"],
            log_path: "svc.log",
          });
          await cri.crictlOk(["start", id]);
          const log = join(pod.logDir, "svc.log");
          const up = await waitFile(log, (t) => t.includes("bunwasi: serving wasi:http on http://0.0.0.0:8080/"), 30_000);
          if (!up) throw new Error(`the service never served; log:\n${fileText(log)}${diagnostics()}`);
          const ip: string = JSON.parse(await cri.crictlOk(["inspectp", "-o", "json", pod.id])).status.network.ip;
          const toHost = await fetch(`http://${ip}:8080/fetch/127.0.0.1:${secret.port}/`);
          const body = await toHost.text();
          expect(body).not.toContain("secret");
          expect(toHost.status).toBe(502);
          const toGateway = await fetch(`http://${ip}:8080/fetch/${gateway}:${seen.port}/`);
          expect([toGateway.status, await toGateway.text()]).toEqual([200, `upstream 200: from ${ip}`]);
        } finally {
          seen.stop(true);
          secret.stop(true);
          await cri.crictlOk(["rmp", "-f", pod.id]);
        }
      },
      T,
    );

    test(
      `${m.mode} mode: a container that asks for a network of its own without naming one (ctr run without --net-host) cannot reach the host's 127.0.0.1 either`,
      async () => {
        const secret = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("the host's loopback secret") });
        const id = name("unnamed");
        const port = freePort();
        const ctr = (args: string[]) => cri.cd.ctr(args, { namespace: K8S_NAMESPACE });
        try {
          const r = await ctr([
            "run",
            "-d",
            "--runtime",
            m.runtime,
            "--env",
            `WASMTIME_HTTP_PROXY_SOCKET_ADDR=0.0.0.0:${port}`,
            IMAGE,
            id,
            "/handler.wasm",
          ]);
          expect(r.code).toBe(0);
          const pid = Number(
            /^\S+\s+(\d+)/m.exec((await ctr(["tasks", "ls"])).stdout.split("\n").find((l) => l.startsWith(id)) ?? "")?.[1],
          );
          expect(pid).toBeGreaterThan(0);
          // The service is reached where it listens: in the container's new namespace (normal
          // mode: runc's, whose loopback the test brings up to get in) or in the daemon's.
          const netns = `/proc/${pid}/ns/net`;
          if (m.mode === "normal") run(["nsenter", `--net=${netns}`, "ip", "link", "set", "lo", "up"]);
          const deadline = Date.now() + 30_000;
          let answer = await getIn(netns, `http://127.0.0.1:${port}/`);
          while (answer.startsWith("failed") && Date.now() < deadline) {
            await Bun.sleep(100);
            answer = await getIn(netns, `http://127.0.0.1:${port}/`);
          }
          expect(answer).toBe("200 hello from wasi:http");
          const toHost = await getIn(netns, `http://127.0.0.1:${port}/fetch/127.0.0.1:${secret.port}/`);
          expect(toHost).not.toContain("secret");
          expect(toHost).toStartWith("502 ");
        } finally {
          secret.stop(true);
          await ctr(["tasks", "kill", "-s", "SIGKILL", id]);
          for (let i = 0; i < 100 && (await ctr(["tasks", "ls", "-q"])).stdout.split("\n").includes(id); i++) {
            await ctr(["tasks", "rm", "-f", id]);
            await Bun.sleep(50);
          }
          await ctr(["containers", "rm", id]);
        }
      },
      T,
    );

    test(
      `${m.mode} mode: as 1000:1000 (supplemental group 2000), a module cannot create a file in a root-owned 0755 volume directory (EACCES); it can in its own, in a root:2000 2775 one and in its image's /tmp, and what it creates is 1000:1000 (1000:2000 in the setgid one)`,
      async () => {
        const vol = mkdtempSync(join(dir, "vol-"));
        chmodSync(vol, 0o755);
        const dirs = { root: join(vol, "root"), mine: join(vol, "mine"), group: join(vol, "group") };
        for (const d of Object.values(dirs)) mkdirSync(d);
        chmodSync(dirs.root, 0o755);
        chownSync(dirs.mine, 1000, 1000);
        chmodSync(dirs.mine, 0o755);
        chownSync(dirs.group, 0, 2000);
        chmodSync(dirs.group, 0o2775);
        const pod = await cri.runPod(name("users"));
        const ids: string[] = [];
        try {
          const write = async (path: string) => {
            const c = name("w");
            const id = await cri.createContainer(pod, {
              metadata: { name: c },
              image: { image: CRI_IMAGES.tools },
              command: ["/wasi-demo-app.wasm", "write", path, "written"],
              mounts: [{ container_path: "/data", host_path: vol }],
              log_path: `${c}.log`,
              linux: { security_context: { run_as_user: { value: 1000 }, run_as_group: { value: 1000 }, supplemental_groups: [2000] } },
            });
            ids.push(id);
            await cri.crictlOk(["start", id]);
            const st = (await cri.waitState(id, "CONTAINER_EXITED", 60_000)).status;
            return { code: st.exitCode as number, log: fileText(join(pod.logDir, `${c}.log`)) };
          };
          const denied = await write("/data/root/x");
          expect(denied.code).toBe(1);
          expect(denied.log).toContain("open /data/root/x: Permission denied");
          expect(existsSync(join(dirs.root, "x"))).toBe(false);
          for (const [path, host, gid] of [
            ["/data/mine/x", join(dirs.mine, "x"), 1000],
            ["/data/group/x", join(dirs.group, "x"), 2000],
          ] as const) {
            const ok = await write(path);
            expect(`${path}: ${ok.code}`).toBe(`${path}: 0`);
            const s = statSync(host);
            expect(`${path}: ${s.uid}:${s.gid}`).toBe(`${path}: 1000:${gid}`);
          }
          const tmp = await write("/tmp/x");
          expect(`/tmp/x: ${tmp.code} ${tmp.code ? tmp.log : ""}`).toBe("/tmp/x: 0 ");
        } finally {
          await cri.crictlOk(["rmp", "-f", pod.id]);
        }
        // Removed, nothing of them is mounted (rootfs, view, the layers' copies) and the volume
        // is whole.
        const left = readFileSync("/proc/self/mountinfo", "utf8")
          .split("\n")
          .filter((l) => ids.some((id) => l.includes(id)) || l.includes(vol));
        expect(left).toEqual([]);
        expect(readdirSync(vol).sort()).toEqual(["group", "mine", "root"]);
        rmSync(vol, { recursive: true, force: true });
      },
      T,
    );
  });
}
