// What the executor-directory prune costs a shim server (every server calls it 5 s after it
// starts): a /proc scan (which every server did before, synchronously; now one server of the
// node, once per interval, and only when an old directory is there), against the cheap
// paths a server takes now (nothing old to remove; or old, but a server scanned within the
// interval). Each with the processes this host has, and again with `--extra N` more
// (sleepers), since the scan stats every process's executable.
//
//   bun bench/executor-dir/prune.ts [--runs 15] [--extra 1000]
//
// Prints a table: median wall time per call, and the system calls of one call (strace -c,
// when strace is installed).

import { linkSync, mkdirSync, mkdtempSync, realpathSync, rmSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pruneExecutorDirs } from "../../src/oci/executor-dir.ts";

const { values } = parseArgs({ options: { runs: { type: "string", default: "15" }, extra: { type: "string", default: "1000" } } });
const runs = Number(values.runs);
const extra = Number(values.extra);

const HOUR = 3_600_000;
const base = mkdtempSync(join(tmpdir(), "bunwasi-prune-bench-"));

function aged(p: string): void {
  mkdirSync(p, { recursive: true });
  const t = (Date.now() - HOUR) / 1000;
  utimesSync(p, t, t);
}

/** A state root for each case; "old" is in use (a link to this runtime), so it stays and every call finds it. */
function root(name: string, withOld: boolean): string {
  const r = join(base, name);
  aged(join(r, "exec", "current"));
  if (withOld) {
    linkSync(realpathSync(process.execPath), join(r, "exec", "old-bin"));
    aged(join(r, "exec", "old"));
    rmSync(join(r, "exec", "old-bin"));
    linkSync(realpathSync(process.execPath), join(r, "exec", "old", "bin"));
    aged(join(r, "exec", "old"));
  }
  return r;
}

const cases = [
  { name: "scan of /proc (async; one server per interval)", root: root("scan", true), interval: 0 },
  { name: "nothing old to remove (now)", root: root("none", false), interval: undefined },
  { name: "old, another server scanned lately (now)", root: root("stamped", true), interval: HOUR },
];
// The stamped case: one scan first, so the calls measured find the stamp.
await pruneExecutorDirs(cases[2]!.root, [join(cases[2]!.root, "exec", "current")], { intervalMs: HOUR });

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

async function measure(): Promise<number[]> {
  const out: number[] = [];
  for (const c of cases) {
    const t: number[] = [];
    for (let i = 0; i < runs; i++) {
      // The scan case: as if no server had scanned yet (the stamp's mtime is coarse).
      if (c.interval === 0) rmSync(join(c.root, "exec", ".pruned"), { force: true });
      const t0 = performance.now();
      await pruneExecutorDirs(c.root, [join(c.root, "exec", "current")], { intervalMs: c.interval });
      t.push(performance.now() - t0);
    }
    out.push(median(t));
  }
  return out;
}

/** System calls of one call in a fresh process (strace -f -c), or "-" without strace. */
function syscalls(c: (typeof cases)[number]): string {
  if (!Bun.which("strace")) return "-";
  const script = `import { pruneExecutorDirs } from ${JSON.stringify(join(import.meta.dir, "../../src/oci/executor-dir.ts"))};
    await pruneExecutorDirs(${JSON.stringify(c.root)}, [${JSON.stringify(join(c.root, "exec", "current"))}], { intervalMs: ${c.interval ?? "undefined"} });`;
  const bare = `await 0;`;
  const count = (code: string) => {
    const r = Bun.spawnSync(
      ["strace", "-f", "-c", "-e", "trace=statx,newfstatat,getdents64,openat,mkdir,rmdir", process.execPath, "-e", code],
      {
        stderr: "pipe",
      },
    );
    const m = /(\d+)\s+(\d+)?\s*total/.exec(r.stderr.toString());
    return m ? Number(m[1]) : Number.NaN;
  };
  return String(count(script) - count(bare));
}

const procs = () => Array.from(new Bun.Glob("[0-9]*").scanSync({ cwd: "/proc", onlyFiles: false })).length;
const rows: string[][] = [];
const before = procs();
const a = await measure();
const sys = cases.map(syscalls);
const sleepers = Array.from({ length: extra }, () => Bun.spawn(["sleep", "600"], { stdout: "ignore", stderr: "ignore" }));
const after = procs();
const b = await measure();
for (const s of sleepers) s.kill();
await Promise.all(sleepers.map((s) => s.exited));
rmSync(base, { recursive: true, force: true });

for (const [i, c] of cases.entries()) {
  rows.push([
    c.name,
    (a[i] as number).toFixed(3),
    (b[i] as number).toFixed(3),
    sys[i] as string,
    ((b[i] as number) / (b[0] as number)).toFixed(3),
  ]);
}
const header = ["case", `ms, ${before} processes`, `ms, ${after} processes`, `file syscalls (${before})`, `÷ scan at ${after}`];
console.log(`| ${header.join(" | ")} |`);
console.log(`|${header.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`);
for (const r of rows) console.log(`| ${r.join(" | ")} |`);
console.log(`medians of ${runs} calls each`);
