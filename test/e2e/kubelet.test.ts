// Kubernetes for real: the kubelet (v1.34, scripts/kubelet.sh) runs static pods standalone
// (no API server) on a private containerd whose CRI default runtime is our shim
// (test/support/kubelet.ts). For Debian's containerd 1.6 and the pinned 2.x, each in normal mode
// and in shared mode (one containerd-wasmtimed daemon per describe): a pod with a wasm
// service container and a native busybox sidecar reaches Running in one shim (shared mode:
// one sandbox of the daemon), with CRI-format
// logs under the kubelet's podLogsDir; run-to-completion wasm containers are restarted per the
// pod's restartPolicy (Always, OnFailure); removing a manifest stops the pod gracefully; and
// once the kubelet has stopped its pods, nothing of them is left. Pod state is read through
// crictl against the same containerd. Exec liveness probes are in kubelet-probes.test.ts.
// On 2.x both modes run once more with the handler's `sandboxer = "shim"` (containerd's Sandbox
// API): the pod is our server or the daemon's sandbox, with no pause container.
// Missing binaries fail, never skip.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { containerStateDir, runtimeRoot } from "../../src/runtime-v2/paths.ts";
import { mountsUnder } from "../support/containerd.ts";
import { CRI_IMAGES, crictlPath, K8S_NAMESPACE } from "../support/cri.ts";
import {
  CONTAINERDS,
  type CriPod,
  containerCgroups,
  KUBELET_CASES,
  KUBELET_SHIM_CASES,
  type KubeletEnv,
  kubeletEnv,
  kubeletPath,
  POD_NAMESPACE,
} from "../support/kubelet.ts";
import { processes } from "../support/processes.ts";

const T = 240_000;
const VERSE = "This is a song that never ends.";

test("prerequisites: root, runc, the kubelet, crictl and both containerds", () => {
  expect(process.getuid?.()).toBe(0);
  expect(Bun.which("runc")).not.toBeNull();
  for (const f of [kubeletPath(), crictlPath(), ...CONTAINERDS.map((c) => c.binary)]) expect(`${f}: ${existsSync(f)}`).toBe(`${f}: true`);
});

/** Shim processes this containerd started for `id` (their -id argument), any runtime. */
function shimsFor(k: KubeletEnv, id: string): string[][] {
  return [...processes().values()].filter(
    (a) => /containerd-shim/.test(a[0] ?? "") && a.includes(k.cri.cd.address) && a[a.indexOf("-id") + 1] === id,
  );
}

/** One CRI log line: `<RFC 3339 time> <stream> <P|F> <text>` (the kubelet's CRI log format). */
const CRI_LINE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([PF]) (.*)$/;

function criLog(path: string): { stream: string; tag: string; text: string }[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => {
      const m = CRI_LINE.exec(l);
      if (!m) throw new Error(`not a CRI log line: ${JSON.stringify(l)}`);
      return { stream: m[2]!, tag: m[3]!, text: m[4]! };
    });
}

/** The kubelet's log file of one attempt: <podLogsDir>/<namespace>_<pod>_<uid>/<container>/<attempt>.log */
function podLogPath(k: KubeletEnv, sandbox: CriPod, container: string, attempt: number): string {
  const m = sandbox.metadata;
  return join(k.podLogsDir, `${m.namespace}_${m.name}_${m.uid}`, container, `${attempt}.log`);
}

for (const { name, binary, shared, mode, sandboxer } of [...KUBELET_CASES, ...KUBELET_SHIM_CASES]) {
  describe(`kubelet (static pods) on ${name}, default runtime our shim (${mode})`, () => {
    let k: KubeletEnv;
    /** Every sandbox and container id the suite saw, for the teardown test. */
    const seen = new Set<string>();

    beforeAll(async () => {
      if (!existsSync(binary)) throw new Error(`${binary} is missing: run scripts/containerd-versions.sh`);
      k = await kubeletEnv({ binary, shared, ...(sandboxer ? { sandboxer } : {}) });
    }, T);

    afterAll(async () => {
      await k?.stop();
    }, T);

    /** Shared mode: the daemon's sandboxes serving pod sandbox `id`. */
    const sandboxesOf = (id: string) => k.daemon!.sandboxesOf(K8S_NAMESPACE, id);

    const readySandbox = (pod: string) =>
      k.until(`pod ${pod}'s sandbox to be ready`, async () => (await k.sandboxes(pod)).find((p) => p.state === "SANDBOX_READY"));

    test(
      "a static pod reaches Running: a wasm service container and a native busybox sidecar beside the sandbox, all in one shim; logs in CRI format under podLogsDir",
      async () => {
        const podName = k.addPod({
          metadata: { name: "web" },
          spec: {
            containers: [
              { name: "daemon", image: CRI_IMAGES.demo, args: ["daemon"] },
              {
                name: "sidecar",
                image: CRI_IMAGES.busybox,
                command: ["sh", "-c", "echo sidecar up; trap 'exit 0' TERM; while true; do sleep 1; done"],
              },
            ],
          },
        });
        const sandbox = await readySandbox("web");
        expect(sandbox.metadata.name).toBe(podName);
        expect(sandbox.metadata.namespace).toBe(POD_NAMESPACE);
        const running = (c: string) =>
          k.until(`container ${c} of pod web to run`, async () =>
            (await k.containers("web", c)).find((x) => x.state === "CONTAINER_RUNNING"),
          );
        const daemon = await running("daemon");
        const sidecar = await running("sidecar");
        for (const id of [sandbox.id, daemon.id, sidecar.id]) seen.add(id);
        expect(daemon.podSandboxId).toBe(sandbox.id);
        expect(sidecar.podSandboxId).toBe(sandbox.id);
        expect(daemon.metadata.attempt).toBe(0);

        // The pod named no RuntimeClass: containerd's default runtime ran it, which is ours.
        // (CRI's verbose info of a pod is its pause container's; with the shim sandboxer there
        // is none, and the checks below find the pod ours: our shim or the daemon's sandbox.)
        const inspectp = JSON.parse(await k.cri.crictlOk(["inspectp", "-o", "json", sandbox.id]));
        if (!sandboxer) expect(inspectp.info.runtimeType).toBe(k.runtime);
        if (shared) {
          // No shim process (the thin shim's `start` asked the daemon for the pod's sandbox and
          // is gone): one sandbox in the daemon holds the pause, the wasm and the sidecar (with
          // the shim sandboxer there is no pause: the sandbox is the pod).
          expect(shimsFor(k, sandbox.id)).toEqual([]);
          expect((await sandboxesOf(sandbox.id)).map((s) => s.containers)).toEqual([sandboxer ? 2 : 3]);
        } else {
          // One shim for the whole pod: started for the sandbox, the containers joined it.
          const shims = shimsFor(k, sandbox.id);
          expect(shims.length).toBe(1);
          expect(shims[0]![0]).toEndWith("containerd-shim-wasmtime-v1");
        }
        expect(shimsFor(k, daemon.id)).toEqual([]);
        expect(shimsFor(k, sidecar.id)).toEqual([]);
        // With no pod cgroups (cgroupsPerQOS: false) the kubelet names no cgroup parent, so a
        // container's cgroup is containerd's default (what the teardown test finds gone). In
        // shared mode the wasm container runs on a thread of the daemon: no cgroup of its own.
        for (const d of containerCgroups(daemon.id)) expect(`${d}: ${existsSync(d)}`).toBe(`${d}: ${!shared}`);
        for (const d of containerCgroups(sidecar.id)) expect(`${d}: ${existsSync(d)}`).toBe(`${d}: true`);

        // Logs: the kubelet picked the path; containerd wrote CRI-format lines there.
        const daemonLog = podLogPath(k, sandbox, "daemon", 0);
        await k.until(
          "the daemon's verses in its log file",
          () => existsSync(daemonLog) && readFileSync(daemonLog, "utf8").includes(VERSE),
        );
        const lines = criLog(daemonLog);
        expect(lines.length).toBeGreaterThan(0);
        // Whole lines (F), all on stdout, the verse among them.
        expect(new Set(lines.map((l) => `${l.stream} ${l.tag}`))).toEqual(new Set(["stdout F"]));
        expect(lines.map((l) => l.text)).toContain(VERSE);
        const sidecarLog = podLogPath(k, sandbox, "sidecar", 0);
        await k.until("the sidecar's line in its log file", () => existsSync(sidecarLog) && readFileSync(sidecarLog, "utf8") !== "");
        expect(criLog(sidecarLog)[0]).toEqual({ stream: "stdout", tag: "F", text: "sidecar up" });
        expect(await k.cri.crictlOk(["logs", daemon.id])).toStartWith(`${VERSE}\n`);
      },
      T,
    );

    test(
      "restartPolicy Always: a run-to-completion wasm container (exit 3) is started again and again, each attempt exiting 3",
      async () => {
        k.addPod({
          metadata: { name: "always" },
          spec: { restartPolicy: "Always", containers: [{ name: "job", image: CRI_IMAGES.demo, args: ["exit", "3"] }] },
        });
        const sandbox = await readySandbox("always");
        seen.add(sandbox.id);
        const newest = await k.until(
          "the job's third attempt",
          async () => (await k.containers("always", "job")).find((c) => c.metadata.attempt >= 2),
          120_000,
        );
        // The kubelet's restart count (kept in the container's annotations) is the attempt.
        expect(newest.annotations["io.kubernetes.container.restartCount"]).toBe(String(newest.metadata.attempt));
        // Every attempt the runtime still keeps (the kubelet's GC keeps few) exited with 3 or
        // is the newest, which may still be starting or running.
        let looked = 0;
        for (const c of await k.containers("always", "job")) {
          seen.add(c.id);
          expect(c.podSandboxId).toBe(sandbox.id);
          let status: { state: string; exitCode: number };
          try {
            status = (await k.cri.inspect(c.id)).status;
          } catch (e) {
            // The kubelet's container GC may remove an older attempt between the listing and
            // this look (seen in shared mode, where attempts follow each other fast).
            if (/NotFound/.test(String(e)) && c.metadata.attempt < newest.metadata.attempt) continue;
            throw e;
          }
          looked++;
          if (status.state === "CONTAINER_EXITED")
            expect(`attempt ${c.metadata.attempt}: ${status.exitCode}`).toBe(`attempt ${c.metadata.attempt}: 3`);
          else expect(c.metadata.attempt).toBeGreaterThanOrEqual(newest.metadata.attempt);
        }
        expect(looked).toBeGreaterThan(0);
        // Restarts happen inside the pod: its sandbox is the one it started with.
        expect((await k.sandboxes("always")).map((p) => [p.id, p.state])).toEqual([[sandbox.id, "SANDBOX_READY"]]);
      },
      T,
    );

    test(
      "restartPolicy OnFailure: the container that exits 3 is restarted, the one that exits 0 is not",
      async () => {
        k.addPod({
          metadata: { name: "onfailure" },
          spec: {
            restartPolicy: "OnFailure",
            containers: [
              { name: "fails", image: CRI_IMAGES.demo, args: ["exit", "3"] },
              { name: "succeeds", image: CRI_IMAGES.demo, args: ["exit", "0"] },
            ],
          },
        });
        const sandbox = await readySandbox("onfailure");
        seen.add(sandbox.id);
        const done = await k.until("the succeeding container to exit", async () => {
          const cs = await k.containers("onfailure", "succeeds");
          return cs.length && cs.every((c) => c.state === "CONTAINER_EXITED") ? cs : undefined;
        });
        // Two more restarts of the failing one after the other exited: had the kubelet wanted to
        // restart the succeeding one, it would have by now (each sync considers both).
        const base = (await k.containers("onfailure", "fails"))[0]?.metadata.attempt ?? 0;
        const fails = await k.until(
          "two more attempts of the failing container",
          async () => (await k.containers("onfailure", "fails")).find((c) => c.metadata.attempt >= base + 2),
          120_000,
        );
        seen.add(fails.id);
        const succeeds = await k.containers("onfailure", "succeeds");
        expect(succeeds.map((c) => [c.id, c.metadata.attempt, c.state])).toEqual(done.map((c) => [c.id, 0, "CONTAINER_EXITED"]));
        for (const c of succeeds) {
          seen.add(c.id);
          expect((await k.cri.inspect(c.id)).status.exitCode).toBe(0);
        }
      },
      T,
    );

    test(
      "removing the manifest stops the pod within its grace period: the wasm daemon exits on SIGTERM (143, not a SIGKILL's 137), the sandbox stops",
      async () => {
        k.addPod({
          metadata: { name: "graceful" },
          spec: { terminationGracePeriodSeconds: 60, containers: [{ name: "daemon", image: CRI_IMAGES.demo, args: ["daemon"] }] },
        });
        const sandbox = await readySandbox("graceful");
        const daemon = await k.until("the daemon to run", async () =>
          (await k.containers("graceful", "daemon")).find((c) => c.state === "CONTAINER_RUNNING"),
        );
        seen.add(sandbox.id);
        seen.add(daemon.id);
        k.removePod("graceful");
        const status = await k.until("the daemon to exit", async () => {
          const s = (await k.cri.inspect(daemon.id)).status;
          return s.state === "CONTAINER_EXITED" ? s : undefined;
        });
        expect(status.exitCode).toBe(143);
        expect(status.reason).toBe("Error");
        await k.until("the sandbox to stop", async () => (await k.sandboxes("graceful")).every((p) => p.state === "SANDBOX_NOTREADY"));
        // The kubelet killed it with the pod's grace period, not an override.
        expect(readFileSync(k.logPath, "utf8")).toMatch(/"Killing container with a grace period" .*containerName="daemon".*gracePeriod=60/);
        // The pod's shim is gone once its tasks are (shared mode: the daemon's sandbox of it).
        await k.until("the pod's shim to exit", () => shimsFor(k, sandbox.id).length === 0);
        if (shared) await k.until("the daemon to close the pod's sandbox", async () => (await sandboxesOf(sandbox.id)).length === 0);
      },
      T,
    );

    test(
      "after the kubelet stops its pods and exits, nothing is left: no kubelet or shim process, no mount, no cgroup, no /run/bunwasi state",
      async () => {
        const pid = k.pid;
        expect(pid).toBeGreaterThan(0);
        for (const p of JSON.parse(await k.cri.crictlOk(["pods", "-o", "json"])).items ?? []) seen.add(p.id);
        for (const c of JSON.parse(await k.cri.crictlOk(["ps", "-a", "-o", "json"])).containers ?? []) seen.add(c.id);
        await k.stopKubelet();
        expect(existsSync(`/proc/${pid}`)).toBe(false);
        const ids = [...seen];
        expect(ids.length).toBeGreaterThan(4);
        if (sandboxer) {
          // Under the Sandbox API a stopped pod is the sandbox's until RemovePodSandbox (its
          // ShutdownSandbox closes our server, or the daemon's sandbox), and the kubelet stopped
          // before its garbage collection removed them: what is left runs nothing (no runc,
          // no holder, no executor), and removing them through CRI, as that collection would,
          // leaves nothing.
          const left = JSON.parse(await k.cri.crictlOk(["pods", "-o", "json"])).items ?? [];
          expect(left.map((p: CriPod) => p.state).filter((s: string) => s !== "SANDBOX_NOTREADY")).toEqual([]);
          const procsIn = (d: string) => (existsSync(join(d, "cgroup.procs")) ? readFileSync(join(d, "cgroup.procs"), "utf8").trim() : "");
          for (const id of ids) for (const d of containerCgroups(id)) expect(`${d}: ${procsIn(d)}`).toBe(`${d}: `);
          for (const p of left) await k.cri.crictlOk(["rmp", p.id]);
        }
        await k.until("every shim of the kubelet's pods to exit", () => ids.every((id) => shimsFor(k, id).length === 0));
        // Shared mode: the daemon serves no sandbox any more.
        if (shared)
          await k.until("the daemon to close every sandbox", async () => (await Promise.all(ids.map(sandboxesOf))).flat().length === 0);
        // Nothing but containerd itself still names its socket (shims get it as -address).
        expect([...processes().values()].filter((a) => a.includes(k.cri.cd.address) && a[0] !== k.cri.cd.binary)).toEqual([]);
        expect(mountsUnder(k.cri.dir).filter((m) => ids.some((id) => m.includes(id)))).toEqual([]);
        // Nothing below the kubelet's root (its own rshared bind of it stopKubelet removed).
        expect(mountsUnder(k.root)).toEqual([]);
        for (const id of ids) {
          expect(existsSync(join(containerStateDir(K8S_NAMESPACE), id))).toBe(false);
          expect(existsSync(join(runtimeRoot(K8S_NAMESPACE), id))).toBe(false);
          for (const d of containerCgroups(id)) expect(`${d}: ${existsSync(d)}`).toBe(`${d}: false`);
        }
        // The rest (stopped sandboxes in containerd's store, containerd itself) goes with the env.
        const dir = k.cri.dir;
        await k.stop();
        expect(existsSync(dir)).toBe(false);
        // Shared mode: the daemon, stopped last, ended cleanly.
        if (shared) expect(k.daemonExit).toBe(0);
        expect([...processes().values()].filter((a) => a.join(" ").includes(dir))).toEqual([]);
      },
      T,
    );
  });
}
