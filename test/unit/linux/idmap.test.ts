// src/linux/idmap.ts: the id maps of a container's user (a permutation of all ids, so that no
// owner is left unmapped), and, as root, a module's file access through a view idmapped to
// 1000:1000 with the run's threads without capabilities over files (RunContext.noFileCapabilities):
// what the shared-mode daemon does (src/oci/wasi-view.ts viewAsUser), the module a real one
// (test/wasm/wasi-demo-app.c `write`) run by libwasmtime, its file operations on libwasmtime's
// own threads.
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { GROUP_SLOT_BASE, GROUP_SLOTS, idMaps, permutationMap } from "../../../src/linux/idmap.ts";
import { mountView, unmountView, viewAsUser } from "../../../src/oci/wasi-view.ts";
import { prepare, wasm } from "../engines/helpers.ts";

/** The lines of a map as [inside, outside, count]. */
const lines = (map: string) =>
  map
    .trim()
    .split("\n")
    .map((l) => l.split(" ").map(Number) as [number, number, number]);

/** Where `id` goes through `map`. */
function through(map: string, id: number): number | undefined {
  for (const [i, o, n] of lines(map)) if (id >= i && id < i + n) return o + (id - i);
  return undefined;
}

describe("the maps", () => {
  test("a permutation of every id, identity but for the ids asked for; each range once each way", () => {
    for (const wanted of [
      [[1000, 0]],
      [[1, 0]],
      [[0, 5]],
      [
        [1000, 0],
        [2000, 4294967040],
        [0, 4294967041],
      ],
    ] as [number, number][][]) {
      const map = permutationMap(wanted);
      for (const [i, o] of wanted) expect(through(map, i)).toBe(o);
      // Every id is mapped (0 to 2^32-2), the insides and outsides each cover it exactly once.
      const ls = lines(map);
      const total = ls.reduce((n, [, , c]) => n + c, 0);
      expect(total).toBe(0xffff_ffff);
      const outs = ls.map(([, o, c]) => [o, c] as const).sort((a, b) => a[0] - b[0]);
      let next = 0;
      for (const [o, c] of outs) {
        expect(o).toBe(next);
        next = o + c;
      }
      expect(ls.length).toBeLessThanOrEqual(340); // the kernel's limit of lines
    }
    // The ids sent away are taken back: 1000 → 0 makes 0 → 1000.
    expect(through(permutationMap([[1000, 0]]), 0)).toBe(1000);
    expect(through(permutationMap([[1000, 0]]), 42)).toBe(42);
  });

  test("a container's user: its uid and gid to the daemon's, additional groups to the reserved ones; none for the daemon's own ids", () => {
    const own = { uid: 0, gid: 0 };
    expect(idMaps({ uid: 0, gid: 0, additionalGids: [] }, own)).toBeUndefined();
    expect(idMaps({ uid: 0, gid: 0, additionalGids: [0] }, own)).toBeUndefined();
    const m = idMaps({ uid: 1000, gid: 1001, additionalGids: [2000, 1001, 2000, 0] }, own);
    if (!m) throw new Error("no maps");
    expect([through(m.uidMap, 1000), through(m.uidMap, 0)]).toEqual([0, 1000]);
    expect([through(m.gidMap, 1001), through(m.gidMap, 2000), through(m.gidMap, 0)]).toEqual([0, GROUP_SLOT_BASE, GROUP_SLOT_BASE + 1]);
    // A root container in another group needs a map too.
    expect(through(idMaps({ uid: 0, gid: 5 }, own)?.gidMap ?? "", 5)).toBe(0);
    // More additional groups than slots: the rest give nothing (less access, never more).
    const many = idMaps({ uid: 1, gid: 1, additionalGids: Array.from({ length: 100 }, (_, i) => 5000 + i) }, own);
    expect(through(many?.gidMap ?? "", 5000 + GROUP_SLOTS - 1)).toBe(GROUP_SLOT_BASE + GROUP_SLOTS - 1);
    expect(through(many?.gidMap ?? "", 5000 + GROUP_SLOTS)).toBe(5000 + GROUP_SLOTS);
  });
});

describe("a module's file access through a view idmapped to 1000:1000, its threads without capabilities over files (root)", () => {
  test("prerequisites: root (mounts, idmapped mounts)", () => expect(process.getuid?.()).toBe(0));

  const base = mkdtempSync(join(tmpdir(), "bunwasi-idmap-"));
  afterAll(() => {
    unmountView(join(base, "view"));
    rmSync(base, { recursive: true, force: true });
  });

  test("a root-owned 0755 directory refuses (EACCES), its own directory, a 1777 one and a group-writable one of its group take files owned 1000:1000; reads of root's files work", async () => {
    prepare();
    const root = join(base, "root");
    const dirs = { rootOwned: join(root, "rootdir"), mine: join(root, "mine"), tmp: join(root, "tmp"), group: join(root, "group") };
    for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
    chmodSync(root, 0o755);
    chmodSync(dirs.rootOwned, 0o755);
    chownSync(dirs.mine, 1000, 1000);
    chmodSync(dirs.tmp, 0o1777);
    chownSync(dirs.group, 0, 1000);
    chmodSync(dirs.group, 0o775);
    writeFileSync(join(root, "public.txt"), "for all\n", { mode: 0o644 });
    writeFileSync(join(root, "secret.txt"), "root's\n", { mode: 0o600 });
    const view = join(base, "view");
    mountView({ root, readOnly: false, volumes: [] }, view);
    await viewAsUser(view, { uid: 1000, gid: 1000, additionalGids: [] });
    expect(readFileSync("/proc/self/mountinfo", "utf8")).toMatch(new RegExp(` ${view} \\S*idmapped`));

    const runner = await wasmtime.load();
    try {
      const write = async (path: string) => {
        const err = join(base, "err");
        const r = await runner.run({
          modulePath: wasm("wasi-demo-app"),
          args: ["wasi-demo-app", "write", path, "written"],
          env: [],
          rootDir: view,
          stdout: { kind: "path", path: join(base, "out") },
          stderr: { kind: "path", path: err },
          noFileCapabilities: true,
        });
        return `${r.code} ${existsSync(err) ? readFileSync(err, "utf8").trim() : ""}`.trim();
      };
      // Reads: a root-owned 0644 file is readable, a 0600 one is not (no CAP_DAC_READ_SEARCH).
      const out = join(base, "probe");
      const probe = await runner.run({
        modulePath: wasm("escape"),
        args: ["escape", "/public.txt", "/secret.txt"],
        env: [],
        rootDir: view,
        stdout: { kind: "path", path: out },
        noFileCapabilities: true,
      });
      expect(probe.code).toBe(0);
      expect(readFileSync(out, "utf8")).toBe("/public.txt: ok for all\n/secret.txt: error Permission denied\n");
      expect(await write("/rootdir/x")).toBe("1 open /rootdir/x: Permission denied");
      expect(await write("/x")).toBe("1 open /x: Permission denied");
      expect(existsSync(join(dirs.rootOwned, "x"))).toBe(false);
      for (const [path, host] of [
        ["/mine/x", join(dirs.mine, "x")],
        ["/tmp/x", join(dirs.tmp, "x")],
        ["/group/x", join(dirs.group, "x")],
      ] as const) {
        expect(`${path}: ${await write(path)}`).toBe(`${path}: 0`);
        const s = statSync(host);
        expect(`${path}: ${s.uid}:${s.gid}`).toBe(`${path}: 1000:1000`);
      }
    } finally {
      runner.close();
    }
  });
});
