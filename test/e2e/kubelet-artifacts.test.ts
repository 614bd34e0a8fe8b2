// OCI wasm artifacts where they are used: a real kubelet (static pods, no API server,
// test/support/kubelet.ts) on Debian's containerd 1.6 and the pinned 2.x, in normal mode and in
// shared mode (one containerd-wasmtimed daemon per describe), runs a pod whose
// containers' images are wasm artifacts (no rootfs layer), one a core module and one a
// component, pulled by nobody (imagePullPolicy Never: imported with `ctr images import
// --all-platforms --no-unpack`). Both run to completion with their output in the kubelet's
// pod logs, and the compile of each layer is in containerd's content store, labelled.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Labels } from "../../src/oci/artifact.ts";
import { type BuiltArtifact, writeArtifactArchive } from "../../tools/image/artifact.ts";
import { K8S_NAMESPACE } from "../support/cri.ts";
import { type CriPod, KUBELET_CASES, type KubeletEnv, kubeletEnv } from "../support/kubelet.ts";
import { WASM } from "../support/shim-env.ts";

const T = 240_000;

function podLogPath(k: KubeletEnv, sandbox: CriPod, container: string, attempt: number): string {
  const m = sandbox.metadata;
  return join(k.podLogsDir, `${m.namespace}_${m.name}_${m.uid}`, container, `${attempt}.log`);
}

/** The payloads of CRI log lines ("<time> <stream> <P|F> <text>"). */
const lines = (path: string) =>
  readFileSync(path, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split(" ").slice(3).join(" "));

for (const { name, binary, shared, mode } of KUBELET_CASES) {
  describe(`kubelet runs OCI wasm artifacts on ${name} (${mode})`, () => {
    let k: KubeletEnv;
    const images: Record<"module" | "component", BuiltArtifact> = {} as never;

    beforeAll(async () => {
      if (!existsSync(binary)) throw new Error(`${binary} is missing: run scripts/containerd-versions.sh`);
      k = await kubeletEnv({ binary, shared });
      for (const [kind, file] of [
        ["module", "wasi-demo-app.wasm"],
        ["component", "components/wasi-demo-app.wasm"],
      ] as const) {
        const archive = join(k.cri.dir, `art-${kind}.tar`);
        images[kind] = writeArtifactArchive(archive, {
          name: `bunwasi-art/kubelet-${kind}:1`,
          layers: [{ source: join(WASM, file) }],
          entrypoint: ["/demo.wasm"],
        });
        const r = await k.cri.cd.ctr(["images", "import", "--all-platforms", "--no-unpack", archive], { namespace: K8S_NAMESPACE });
        if (r.code !== 0) throw new Error(`import ${kind}: ${r.stderr}`);
      }
      await k.until("the CRI plugin to list the artifacts", async () => {
        const listed = await k.cri.crictlOk(["images", "-o", "json"]);
        return listed.includes(images.module.name) && listed.includes(images.component.name);
      });
    }, T);

    afterAll(async () => {
      await k?.stop();
      if (shared) expect(k?.daemonExit).toBe(0);
    }, T);

    test(
      "a static pod of a module artifact and a component artifact: both run to completion, output in the pod logs, compiles stored",
      async () => {
        k.addPod({
          metadata: { name: "artifacts" },
          spec: {
            restartPolicy: "Never",
            containers: [
              { name: "module", image: images.module.name, imagePullPolicy: "Never", args: ["echo", "module", "from", "kubelet"] },
              { name: "component", image: images.component.name, imagePullPolicy: "Never", args: ["echo", "component", "from", "kubelet"] },
            ],
          },
        });
        const sandbox = await k.until("the pod's sandbox", async () => (await k.sandboxes("artifacts"))[0]);
        for (const [c, words] of [
          ["module", "module from kubelet"],
          ["component", "component from kubelet"],
        ] as const) {
          const done = await k.until(`container ${c} to exit`, async () =>
            (await k.containers("artifacts", c)).find((x) => x.state === "CONTAINER_EXITED"),
          );
          expect((await k.cri.inspect(done.id)).status.exitCode).toBe(0);
          expect(lines(podLogPath(k, sandbox, c, done.metadata.attempt))).toEqual([words, "exiting"]);
        }
        const ls = await k.cri.cd.ctr(["content", "ls"], { namespace: K8S_NAMESPACE });
        for (const img of [images.module, images.component]) {
          const layer = ls.stdout.split("\n").find((l) => l.startsWith(img.layers[0]!.digest)) ?? "";
          expect(layer).toContain(`${Labels.gcRef("wasmtime")}=sha256:`);
        }
      },
      T,
    );
  });
}
