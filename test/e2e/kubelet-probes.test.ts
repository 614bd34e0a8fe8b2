// Exec liveness probes under the real kubelet (test/support/kubelet.ts): the kubelet runs the
// probe command in the container through CRI ExecSync, which containerd turns into the shim's
// Exec. A wasm probe command (the demo module's `exit N`) must run: exit 0 keeps the container,
// exit 1 makes the kubelet restart it. These tests need the shim's Exec: without it every probe
// errors (containerd's ExecSync answers Unimplemented, "Probe errored" in the kubelet's log),
// and the kubelet 1.34 takes an errored probe as "unknown", neither success nor failure: no
// container is restarted, so both tests time out waiting for what a working Exec gives.
// Both modes: in shared mode (handler wasmtimed, one daemon per describe) the probe's module runs
// on a thread of the daemon, in the container's view (issue 17).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { CRI_IMAGES } from "../support/cri.ts";
import { KUBELET_CASES, type KubeletEnv, kubeletEnv } from "../support/kubelet.ts";

const T = 240_000;
const PROBE = ["/wasi-demo-app.wasm", "exit"];

/** The kubelet's log lines about one container's liveness probe with this message (kubelet -v=3 logs successes). */
function probeLines(k: KubeletEnv, pod: string, container: string, message: string): string[] {
  return readFileSync(k.logPath, "utf8")
    .split("\n")
    .filter(
      (l) =>
        l.includes(`"${message}"`) &&
        l.includes('probeType="Liveness"') &&
        l.includes(`pod="`) &&
        l.includes(`/${pod}-`) &&
        l.includes(`containerName="${container}"`),
    );
}

for (const { name, binary, shared, mode } of KUBELET_CASES) {
  describe(`kubelet exec liveness probes on ${name} (${mode})`, () => {
    let k: KubeletEnv;

    beforeAll(async () => {
      if (!existsSync(binary)) throw new Error(`${binary} is missing: run scripts/containerd-versions.sh`);
      k = await kubeletEnv({ binary, shared });
    }, T);

    afterAll(async () => {
      await k?.stop();
      if (shared) expect(k?.daemonExit).toBe(0);
    }, T);

    test(
      "a passing exec probe (exit 0) succeeds again and again and never restarts the container",
      async () => {
        k.addPod({
          metadata: { name: "healthy" },
          spec: {
            containers: [
              {
                name: "daemon",
                image: CRI_IMAGES.demo,
                args: ["daemon"],
                livenessProbe: { exec: { command: [...PROBE, "0"] }, periodSeconds: 1, failureThreshold: 1, timeoutSeconds: 10 },
              },
            ],
          },
        });
        await k.until("five successful probes", () => probeLines(k, "healthy", "daemon", "Probe succeeded").length >= 5, 120_000);
        expect(probeLines(k, "healthy", "daemon", "Probe errored")).toEqual([]);
        expect(probeLines(k, "healthy", "daemon", "Probe failed")).toEqual([]);
        const cs = await k.containers("healthy", "daemon");
        expect(cs.map((c) => [c.metadata.attempt, c.state])).toEqual([[0, "CONTAINER_RUNNING"]]);
      },
      T,
    );

    test(
      "a failing exec probe (exit 1) fails and the kubelet restarts the container: its restart count grows",
      async () => {
        k.addPod({
          metadata: { name: "unhealthy" },
          spec: {
            containers: [
              {
                name: "daemon",
                image: CRI_IMAGES.demo,
                args: ["daemon"],
                livenessProbe: { exec: { command: [...PROBE, "1"] }, periodSeconds: 1, failureThreshold: 1, timeoutSeconds: 10 },
              },
            ],
          },
        });
        const restarted = await k.until(
          "the container's second restart",
          async () => (await k.containers("unhealthy", "daemon")).find((c) => c.metadata.attempt >= 2),
          180_000,
        );
        expect(restarted.annotations["io.kubernetes.container.restartCount"]).toBe(String(restarted.metadata.attempt));
        // Restarted because the probe ran and said "exit 1", not because it could not run.
        expect(probeLines(k, "unhealthy", "daemon", "Probe failed").length).toBeGreaterThanOrEqual(2);
        expect(probeLines(k, "unhealthy", "daemon", "Probe errored")).toEqual([]);
        // The daemon itself never exits on its own: each restart was the kubelet killing it.
        expect(readFileSync(k.logPath, "utf8")).toMatch(/Container daemon failed liveness probe, will be restarted/);
      },
      T,
    );
  });
}
