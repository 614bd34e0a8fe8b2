// Exec liveness probes under the real kubelet (test/support/kubelet.ts): the kubelet runs the
// probe command in the container through CRI ExecSync, which containerd turns into the shim's
// Exec. A wasm probe command (the demo module's `exit N`) must run: exit 0 keeps the container,
// exit 1 makes the kubelet restart it. These tests need the shim's Exec: without it every probe
// errors (containerd's ExecSync answers Unimplemented, "Probe errored" in the kubelet's log),
// and the kubelet 1.34 takes an errored probe as "unknown", neither success nor failure: no
// container is restarted, so both tests time out waiting for what a working Exec gives.
// Shared mode (handler wasmtimed, one daemon per describe) has no Exec of a wasm container yet
// (issue 17: it runs on a thread of the daemon, there is no process to exec in): there one test
// pins that documented failure, and the two above stay normal mode's until issue 17 gives it Exec.
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

    if (shared) {
      test(
        "shared mode: an exec probe of a wasm container errors with the reason (no Exec there yet, issue 17); the kubelet neither passes nor fails it, and the container runs on",
        async () => {
          k.addPod({
            metadata: { name: "probed" },
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
          const errored = await k.until(
            "three errored probes",
            () => {
              const l = probeLines(k, "probed", "daemon", "Probe errored");
              return l.length >= 3 ? l : undefined;
            },
            120_000,
          );
          // Each one refused by the daemon with the reason, as crictl exec is (cri.test.ts).
          for (const l of errored) expect(l).toMatch(/Exec of wasm container [0-9a-f]{64} is not supported in shared mode/);
          // "exit 1" never ran: no failure, so no restart (as it would be in normal mode).
          expect(probeLines(k, "probed", "daemon", "Probe failed")).toEqual([]);
          expect(probeLines(k, "probed", "daemon", "Probe succeeded")).toEqual([]);
          const cs = await k.containers("probed", "daemon");
          expect(cs.map((c) => [c.metadata.attempt, c.state])).toEqual([[0, "CONTAINER_RUNNING"]]);
        },
        T,
      );
      return;
    }

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
