// The timeline of one warm `ctr run --rm` of the wasm echo: what containerd and our shim
// server log (containerd at debug level passes -debug to the shim, whose server then logs
// each Task call with its duration), in ms from the moment ctr was started. Not a test:
// it prints one table, to see where a start goes.
//
//   bun bench/shim/timeline.ts [--runtime io.containerd.wasmtime.v1] [--containerd v2.4.2]
//                              [--all (every log line, snapshot and GC lines included)]

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { IMAGES, REPO, RUNTIME, shimEnv } from "../../test/support/shim-env.ts";

const { values } = parseArgs({
  options: {
    runtime: { type: "string", default: RUNTIME },
    containerd: { type: "string" },
    all: { type: "boolean", default: false },
  },
});
const bin = values.containerd ? join(REPO, "build/containerd", values.containerd, "bin") : "";
const env = await shimEnv(bin ? { binary: join(bin, "containerd"), path: [bin] } : {});
// Lines about other work containerd does meanwhile (image GC, snapshot bookkeeping).
const noise = /snapshot|garbage collect|event published|schedule/;

try {
  const native = values.runtime.startsWith("io.containerd.runc.");
  const [image, args] = native ? [IMAGES.busybox, ["echo", "hi"]] : [IMAGES.demo, ["/wasi-demo-app.wasm", "echo", "hi"]];
  // One run first: the compile cache, the executor directory and the image snapshot exist after it.
  await env.run(image, "timeline-warmup", args, { runtime: values.runtime });
  await Bun.sleep(300);
  const seen = readFileSync(env.cd.logPath, "utf8").length;
  const t0 = Date.now();
  const r = await env.run(image, "timeline", args, { runtime: values.runtime });
  const total = Date.now() - t0;
  if (r.code !== 0) throw new Error(`ctr run failed (${r.code}): ${r.stderr}`);
  await Bun.sleep(300);
  console.log(`### one warm ctr run --rm (${values.runtime}, containerd ${values.containerd ?? "1.6 (Debian)"}): ${total} ms\n`);
  console.log("| ms after ctr started | from | message |\n|---:|---|---|");
  console.log("| 0.0 | ctr | started |");
  for (const line of readFileSync(env.cd.logPath, "utf8").slice(seen).split("\n")) {
    const m = /^time="([^"]+)" level=(\w+) msg="((?:[^"\\]|\\.)*)"(.*)$/.exec(line);
    if (!m) continue;
    const at = Date.parse(m[1] as string) - t0;
    if (at > total || (!values.all && noise.test(m[3] as string))) continue;
    const from = /runtime=bunwasi pid=(\d+)/.test(m[4] as string) ? "shim server" : "containerd";
    const topic = /topic=(\S+)/.exec(m[4] as string)?.[1];
    const msg = `${m[3]}${topic ? ` ${topic}` : ""}`.replace(/\|/g, "\\|").slice(0, 140);
    console.log(`| ${at.toFixed(1)} | ${from} | ${msg} |`);
  }
  console.log(`| ${total.toFixed(1)} | ctr | exited ${r.code} |`);
} finally {
  await env.stop();
}
