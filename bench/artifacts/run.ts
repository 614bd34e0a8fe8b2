// `ctr run --rm` of an OCI wasm artifact (the wasm demo app as the image's one layer, with an
// OCI image config, the kind containerd 2.x's ctr runs), ours against runwasi's wasmtime shim
// (../shared/peers/runwasi, unmodified) in the same run on the same containerd 2.x. Both shims
// read the layer from containerd's content store and write their compile back into it, so:
//   cold  the image's first container: the layer is compiled and stored (a new layer each
//         sample: the module with a custom section that makes its digest unique)
//   warm  later containers of the same image: the compile is found
//   store (ours) the node-local compile cache emptied before each run: the compile comes
//         from the content store
//   rootfs (ours) the same module in an ordinary image layer, warm: what the artifact path
//         costs over a rootfs image
// Not a test: prints medians and ratios.
//
//   bun bench/artifacts/run.ts [--runs 9] [--cold 5] [--runwasi DIR]

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pinned2x } from "../../test/support/containerd-versions.ts";
import { REPO, RUNTIME, shimEnv, WASM } from "../../test/support/shim-env.ts";
import { writeArtifactArchive } from "../../tools/image/artifact.ts";
import { writeImageArchive } from "../../tools/image/layout.ts";
import { RUNWASI, runwasiDir, runwasiPathDir } from "../shim/peers.ts";

const { values } = parseArgs({
  options: { runs: { type: "string", default: "9" }, cold: { type: "string", default: "5" }, runwasi: { type: "string" } },
});
const RUNS = Number(values.runs);
const COLD = Number(values.cold);

/** The module with a custom section named `bench` holding `tag`: same code, another digest. */
function variant(module: Uint8Array, tag: string): Uint8Array {
  const name = new TextEncoder().encode("bench");
  const payload = new TextEncoder().encode(tag);
  const body = [name.length, ...name, ...payload];
  if (body.length > 127) throw new Error("tag too long for a one-byte section size");
  return new Uint8Array([...module, 0, body.length, ...body]);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

const runwasi = runwasiDir(values.runwasi);
if (!runwasi) throw new Error("runwasi's shim not found: give --runwasi DIR (with containerd-shim-wasmtime-v1)");
const V2 = pinned2x();
const execRoot = mkdtempSync("/tmp/bwb-exec-");
const runwasiBin = runwasiPathDir(runwasi);
const env = await shimEnv({
  binary: join(REPO, "build/containerd", V2, "bin/containerd"),
  path: [runwasiBin],
  env: { BUNWASI_EXEC_ROOT: execRoot },
});
const demo = new Uint8Array(readFileSync(join(WASM, "wasi-demo-app.wasm")));
const rows: { shim: string; what: string; ms: number[]; prepare: number[] }[] = [];
/** Our shim's "prepare bundle took X ms" (its -debug log in containerd's), per run: the artifact's lookup, compile or fetch. */
const prepares: number[] = [];
let logSeen = 0;

async function importArtifact(name: string, module: Uint8Array): Promise<void> {
  const archive = join(env.dir, "a.tar");
  writeArtifactArchive(archive, { name, layers: [{ data: module }], configMediaType: "oci" });
  const r = await env.cd.ctr(["images", "import", "--all-platforms", "--no-unpack", archive]);
  if (r.code !== 0) throw new Error(`import ${name}: ${r.stderr}`);
}

let seq = 0;
async function timedRun(runtime: string, image: string, before?: () => void): Promise<number> {
  before?.();
  const t0 = performance.now();
  const r = await env.run(image, `bench-${seq++}`, ["/demo.wasm", "echo", "hi"], { runtime });
  const ms = performance.now() - t0;
  const log = readFileSync(env.cd.logPath, "utf8");
  const fresh = log.slice(logSeen);
  logSeen = log.length;
  const p = [...fresh.matchAll(/prepare bundle took ([\d.]+) ms/g)].at(-1)?.[1];
  if (p) prepares.push(Number(p));
  if (r.code !== 0 || r.stdout !== "hi\nexiting\n") throw new Error(`${runtime} ${image}: exit ${r.code}: ${r.stdout}${r.stderr}`);
  return ms;
}

try {
  for (const [shim, runtime] of [
    ["bunwasi", RUNTIME],
    ["runwasi", RUNWASI],
  ] as const) {
    prepares.length = 0;
    const cold: number[] = [];
    for (let i = 0; i < COLD; i++) {
      const name = `docker.io/bench/${shim}-cold-${i}:1`;
      await importArtifact(name, variant(demo, `${shim}-${i}-${process.pid}`));
      cold.push(await timedRun(runtime, name));
    }
    rows.push({ shim, what: "cold (compile + store)", ms: cold, prepare: prepares.splice(0) });
    const warmImage = `docker.io/bench/${shim}-warm:1`;
    await importArtifact(warmImage, variant(demo, `${shim}-warm-${process.pid}`));
    await timedRun(runtime, warmImage);
    prepares.length = 0;
    const warm: number[] = [];
    for (let i = 0; i < RUNS; i++) warm.push(await timedRun(runtime, warmImage));
    rows.push({ shim, what: "warm (compile found)", ms: warm, prepare: prepares.splice(0) });
    if (shim === "bunwasi") {
      const store: number[] = [];
      const wipe = () => rmSync(join(execRoot, "cache"), { recursive: true, force: true });
      for (let i = 0; i < RUNS; i++) store.push(await timedRun(runtime, warmImage, wipe));
      rows.push({ shim, what: "from the content store", ms: store, prepare: prepares.splice(0) });
      const archive = join(env.dir, "rootfs.tar");
      writeImageArchive(archive, {
        name: "docker.io/bench/rootfs:1",
        files: [{ path: "/demo.wasm", data: demo }],
        config: { entrypoint: ["/demo.wasm"] },
      });
      const r = await env.cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import rootfs image: ${r.stderr}`);
      await timedRun(runtime, "docker.io/bench/rootfs:1");
      prepares.length = 0;
      const rootfs: number[] = [];
      for (let i = 0; i < RUNS; i++) rootfs.push(await timedRun(runtime, "docker.io/bench/rootfs:1"));
      rows.push({ shim, what: "rootfs image, warm", ms: rootfs, prepare: prepares.splice(0) });
    }
  }
} finally {
  await env.stop();
  for (const d of [execRoot, runwasiBin]) rmSync(d, { recursive: true, force: true });
}

const ref = (what: string) => median(rows.find((r) => r.shim === "runwasi" && r.what === what)?.ms ?? [Number.NaN]);
console.log(`ctr run --rm of an OCI wasm artifact (wasi-demo-app, echo hi), containerd ${V2}; ${COLD} cold, ${RUNS} others per row`);
console.log("| shim | case | median ms | min | max | vs runwasi | our prepare bundle, median ms |");
console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
for (const r of rows) {
  const m = median(r.ms);
  const peer = r.what.startsWith("cold") || r.what.startsWith("warm") ? ref(r.what) : Number.NaN;
  const ratio = r.shim === "runwasi" || Number.isNaN(peer) ? "" : `${(m / peer).toFixed(2)}×`;
  console.log(
    `| ${r.shim} | ${r.what} | ${m.toFixed(1)} | ${Math.min(...r.ms).toFixed(1)} | ${Math.max(...r.ms).toFixed(1)} | ${ratio} | ${r.prepare.length ? median(r.prepare).toFixed(1) : ""} |`,
  );
}
