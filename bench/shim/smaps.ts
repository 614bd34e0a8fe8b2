// Where an idle wasm container's memory goes: runs N idle containers (the demo app's
// `daemon`, each in its own pod) on a private containerd, then breaks the PSS of one shim
// server and one executor down by mapping (anonymous, the binary, libwasmtime, libc, …)
// from /proc/PID/smaps, and prints the totals per container. Not a test.
//
//   bun bench/shim/smaps.ts [--n 20] [--runtime io.containerd.wasmtime.v1] [--keep]
//
// With --keep the containers stay up and the pids are printed, for looking by hand, until
// SIGINT or SIGTERM.

import { readdirSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { IMAGES, RUNTIME, shimEnv } from "../../test/support/shim-env.ts";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "20" },
    runtime: { type: "string", default: RUNTIME },
    keep: { type: "boolean", default: false },
    args: { type: "string", default: "/wasi-demo-app.wasm daemon" },
  },
});
const N = Number(values.n);

interface Row {
  pss: number;
  anon: number;
  rss: number;
}

/** PSS, anonymous (private copy-on-write pages included) and RSS per mapping name, in KiB. */
export function smapsByMapping(pid: number): Map<string, Row> {
  const out = new Map<string, Row>();
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps`, "utf8");
  } catch {
    return out;
  }
  let name = "";
  for (const line of text.split("\n")) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const n = (head[1] ?? "").trim();
      name = n === "" ? "[anon]" : n.replace(/^\/var\/lib\/bunwasi\/exec\/[^/]+\//, "<exec>/").replace(/ \(deleted\)$/, "");
      if (!out.has(name)) out.set(name, { pss: 0, anon: 0, rss: 0 });
      continue;
    }
    // Per mapping the kernel reports Anonymous (resident, unshared by nature), not Pss_Anon.
    const m = /^(Pss|Anonymous|Rss):\s+(\d+) kB/.exec(line);
    if (!m) continue;
    const row = out.get(name) as Row;
    if (m[1] === "Pss") row.pss += Number(m[2]);
    else if (m[1] === "Anonymous") row.anon += Number(m[2]);
    else row.rss += Number(m[2]);
  }
  return out;
}

function rollup(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  try {
    for (const line of readFileSync(`/proc/${pid}/smaps_rollup`, "utf8").split("\n")) {
      const m = /^(\w+):\s+(\d+) kB/.exec(line);
      if (m) out[m[1] as string] = Number(m[2]);
    }
  } catch {
    // gone
  }
  return out;
}

function threads(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/task`).length;
  } catch {
    return 0;
  }
}

function pidsMatching(pred: (cmd: string) => boolean): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (pred(readFileSync(`/proc/${d}/cmdline`, "utf8").replaceAll("\0", " "))) out.push(Number(d));
    } catch {
      // gone between readdir and read
    }
  }
  return out;
}

function breakdown(label: string, pid: number): void {
  const r = rollup(pid);
  console.log(
    `\n#### ${label} (pid ${pid}, ${threads(pid)} threads): Pss ${r.Pss} KiB, Pss_Anon ${r.Pss_Anon} KiB, Pss_File ${r.Pss_File} KiB, Rss ${r.Rss} KiB\n`,
  );
  console.log("| mapping | Pss KiB | Anonymous KiB | Rss KiB |\n|---|---:|---:|---:|");
  const rows = [...smapsByMapping(pid)].sort((a, b) => b[1].pss - a[1].pss);
  let rest = { pss: 0, anon: 0, rss: 0 };
  for (const [name, row] of rows) {
    if (row.pss >= 64) console.log(`| ${name} | ${row.pss} | ${row.anon} | ${row.rss} |`);
    else rest = { pss: rest.pss + row.pss, anon: rest.anon + row.anon, rss: rest.rss + row.rss };
  }
  console.log(`| (the rest) | ${rest.pss} | ${rest.anon} | ${rest.rss} |`);
}

const env = await shimEnv();
const ids: string[] = [];
try {
  for (let i = 0; i < N; i++) {
    const id = `smaps-${process.pid}-${i}`;
    const r = await env.cd.ctr(["run", "-d", "--runtime", values.runtime, IMAGES.demo, id, ...values.args.split(" ")]);
    if (r.code !== 0) throw new Error(`run -d: ${r.stderr}`);
    ids.push(id);
  }
  await Bun.sleep(3000);
  const ns = env.cd.namespace;
  const servers = pidsMatching((c) => c.includes(`-namespace ${ns}`) && c.includes("containerd-shim") && c.includes(" serve"));
  const inits: number[] = [];
  for (const id of ids) {
    const ps = await env.cd.ctr(["task", "ps", id]);
    for (const line of ps.stdout.split("\n").slice(1)) {
      const pid = Number(line.trim().split(/\s+/)[0]);
      if (pid) inits.push(pid);
    }
  }
  const sum = (pids: number[], k: string) => pids.reduce((a, p) => a + (rollup(p)[k] ?? 0), 0) / 1024;
  console.log(`### ${N} idle containers (${values.runtime}, ${values.args})\n`);
  console.log(
    "| process kind | count | Pss MiB (sum) | Pss_Anon MiB | Pss_File MiB | Pss per container MiB |\n|---|---:|---:|---:|---:|---:|",
  );
  for (const [kind, pids] of [
    ["server", servers],
    ["executor", inits],
  ] as const) {
    console.log(
      `| ${kind} | ${pids.length} | ${sum(pids, "Pss").toFixed(1)} | ${sum(pids, "Pss_Anon").toFixed(1)} | ${sum(pids, "Pss_File").toFixed(1)} | ${(sum(pids, "Pss") / N).toFixed(2)} |`,
    );
  }
  const total = sum(servers, "Pss") + sum(inits, "Pss");
  console.log(`| all | ${servers.length + inits.length} | ${total.toFixed(1)} | | | ${(total / N).toFixed(2)} |`);
  if (servers[0]) breakdown("one server", servers[0]);
  if (inits[0]) breakdown("one executor", inits[0]);
  if (values.keep) {
    console.log(`\nservers: ${servers.join(" ")}\nexecutors: ${inits.join(" ")}\n(SIGINT or SIGTERM stops them)`);
    // Until told: the clean-up below then runs (a signal's default action would skip it).
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
  }
} finally {
  for (const id of ids) await env.cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
  await Bun.sleep(500);
  for (const id of ids) {
    await env.cd.ctr(["task", "delete", id]);
    await env.cd.ctr(["container", "delete", id]);
  }
  await env.stop();
}
