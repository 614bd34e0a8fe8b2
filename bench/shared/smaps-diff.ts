// What grew between two /proc/PID/smaps of one process (the shared-mode daemon's start and after
// figures, kept by bench/shared/density.ts --smaps DIR): PSS, and PSS with each resident file
// page counted whole (what it would be with no other process mapping the same files: a
// shared library's share otherwise moves with whatever else runs), by kind of mapping, then the
// mappings that grew most. Not a test.
//
//   bun bench/shared/smaps-diff.ts DIR/start.smaps DIR/after.smaps [--top 15]
//
// Anonymous mappings have no name, so their kind is read from their shape:
//   stack         rw after a one-page (or 64 KiB) ---p guard: a thread's stack
//   glibc arena   rw at a 64 MiB boundary followed by its ---p reserve: a non-main malloc arena
//                 (libwasmtime is Rust on glibc malloc; so are the C libraries)
//   [heap]        glibc's main arena (brk)
//   code          anonymous with x: JSC's JIT pool and wasmtime's compiled modules
//   reserve≥1G    a region of 1 GiB or more: mimalloc's arenas (Bun's allocator reserves 1 GiB
//                 at a time) and JSC's own reservations
//   big, small    other anonymous mappings of at least / under 1 MiB
// File mappings by their file's name.

import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { parseArgs } from "node:util";

export interface Mapping {
  start: bigint;
  end: bigint;
  perms: string;
  name: string;
  pss: number;
  rss: number;
  anon: number;
  kind: string;
}

const ARENA = 64n << 20n;

export function parseSmaps(text: string): Mapping[] {
  const out: Mapping[] = [];
  let cur: Mapping | undefined;
  for (const line of text.split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      cur = {
        start: BigInt(`0x${head[1]}`),
        end: BigInt(`0x${head[2]}`),
        perms: head[3] ?? "",
        name: (head[4] ?? "").trim(),
        pss: 0,
        rss: 0,
        anon: 0,
        kind: "",
      };
      out.push(cur);
      continue;
    }
    const m = /^(Pss|Rss|Anonymous):\s+(\d+) kB/.exec(line);
    if (m && cur) {
      if (m[1] === "Pss") cur.pss += Number(m[2]);
      else if (m[1] === "Rss") cur.rss += Number(m[2]);
      else cur.anon += Number(m[2]);
    }
  }
  out.forEach((m, i) => {
    m.kind = kindOf(out, i);
  });
  return out;
}

function kindOf(ms: Mapping[], i: number): string {
  const m = ms[i]!;
  if (m.name === "[heap]" || m.name === "[stack]") return m.name;
  if (m.name.startsWith("/")) return `file ${basename(m.name.replace(/ \(deleted\)$/, ""))}`;
  if (m.name !== "") return m.name;
  if (m.perms.startsWith("---")) return "reserved (---p)";
  const prev = ms[i - 1];
  const next = ms[i + 1];
  if (m.perms.includes("x")) return "code (anon x)";
  if (prev && prev.end === m.start && prev.perms.startsWith("---") && prev.end - prev.start <= 64n << 10n) return "stack";
  if (m.start % ARENA === 0n && next?.start === m.end && next.perms.startsWith("---")) return "glibc arena";
  const size = m.end - m.start;
  if (size >= 1n << 30n) return "reserve≥1G";
  return size >= 1n << 20n ? "big" : "small";
}

const mib = (kib: number) => (kib / 1024).toFixed(2);
const sign = (kib: number) => `${kib >= 0 ? "+" : ""}${mib(kib)}`;

export function byKind(ms: Mapping[]): Map<string, { pss: number; n: number }> {
  const out = new Map<string, { pss: number; n: number }>();
  for (const m of ms) {
    const r = out.get(m.kind) ?? { pss: 0, n: 0 };
    r.pss += m.pss;
    r.n++;
    out.set(m.kind, r);
  }
  return out;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: "string", default: "15" } },
  });
  if (positionals.length !== 2) throw new Error("usage: smaps-diff.ts START.smaps AFTER.smaps [--top N]");
  const [a, b] = positionals.map((p) => parseSmaps(readFileSync(p!, "utf8")));
  const ka = byKind(a!);
  const kb = byKind(b!);
  const total = (ms: Mapping[]) => ms.reduce((s, m) => s + m.pss, 0);
  // Each resident page counted whole: PSS as it would be with no other process sharing a file.
  const whole = (ms: Mapping[]) => ms.reduce((s, m) => s + (m.name.startsWith("/") ? m.rss : m.pss), 0);
  const pct = (x: number, y: number) => `${y >= x ? "+" : ""}${(((y - x) / x) * 100).toFixed(1)}%`;
  console.log(`PSS ${mib(total(a!))} → ${mib(total(b!))} MiB (${sign(total(b!) - total(a!))}, ${pct(total(a!), total(b!))})`);
  console.log(
    `anonymous PSS + file RSS (each resident page whole) ${mib(whole(a!))} → ${mib(whole(b!))} MiB (${sign(whole(b!) - whole(a!))}, ${pct(whole(a!), whole(b!))})\n`,
  );
  console.log("| kind | mappings | PSS start (MiB) | PSS after | change |\n|---|---:|---:|---:|---:|");
  const kinds = [...new Set([...ka.keys(), ...kb.keys()])].sort(
    (x, y) => Math.abs((kb.get(y)?.pss ?? 0) - (ka.get(y)?.pss ?? 0)) - Math.abs((kb.get(x)?.pss ?? 0) - (ka.get(x)?.pss ?? 0)),
  );
  for (const k of kinds) {
    const [s, t] = [ka.get(k), kb.get(k)];
    if ((s?.pss ?? 0) === 0 && (t?.pss ?? 0) === 0) continue;
    console.log(
      `| ${k} | ${s?.n ?? 0} → ${t?.n ?? 0} | ${mib(s?.pss ?? 0)} | ${mib(t?.pss ?? 0)} | ${sign((t?.pss ?? 0) - (s?.pss ?? 0))} |`,
    );
  }
  // Mapping by mapping: each after-mapping against the start PSS of what overlapped it.
  const grew = b!.map((m) => {
    const before = a!.filter((o) => o.start < m.end && o.end > m.start).reduce((s, o) => s + o.pss, 0);
    return { m, before, delta: m.pss - before };
  });
  grew.sort((x, y) => y.delta - x.delta);
  console.log(`\nThe ${values.top} mappings that grew most:\n`);
  console.log("| address | size (KiB) | perms | kind | PSS start (KiB) | after | change |\n|---|---:|---|---|---:|---:|---:|");
  for (const g of grew.slice(0, Number(values.top)))
    console.log(
      `| ${g.m.start.toString(16)} | ${(g.m.end - g.m.start) >> 10n} | ${g.m.perms} | ${g.m.kind} | ${g.before} | ${g.m.pss} | ${g.delta >= 0 ? "+" : ""}${g.delta} |`,
    );
}
