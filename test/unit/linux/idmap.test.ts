// src/linux/idmap.ts: the id maps of a container's user (a permutation of all ids, so that no
// owner is left unmapped), and, as root, a module's file access through a view mounted as
// 1000:1000 (src/oci/wasi-view.ts mountViewAs: an overlay rootfs re-mounted over idmapped
// layers, an idmapped volume) by a Runner whose runs give up the capabilities over files
// (LoadOptions.noFileCapabilities): what the shared-mode daemon does. The modules are real ones
// (test/wasm/wasi-demo-app.c `write`, escape.c) run by libwasmtime, whose file operations happen
// on its own threads, in a process of their own (fixtures/run-in-view.ts).
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GROUP_SLOT_BASE, GROUP_SLOTS, idMaps, permutationMap } from "../../../src/linux/idmap.ts";
import { mount } from "../../../src/linux/libc.ts";
import { unmountAll } from "../../../src/oci/rootfs.ts";
import { mountViewAs, unmountView } from "../../../src/oci/wasi-view.ts";
import { prepare, WASM_DIR } from "../engines/helpers.ts";

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

describe("a module's file access through a view mounted as 1000:1000, its threads without capabilities over files (root)", () => {
  test("prerequisites: root (mounts, idmapped mounts)", () => expect(process.getuid?.()).toBe(0));

  const base = mkdtempSync(join(tmpdir(), "bunwasi-idmap-"));
  const rootfs = join(base, "rootfs");
  const view = join(base, "view");
  afterAll(() => {
    unmountView(view);
    unmountAll(rootfs);
    rmSync(base, { recursive: true, force: true });
  });

  test("rootfs (an overlay, re-mounted over idmapped layers) and volume: root's 0755 directories refuse (EACCES), root's 0600 file is unreadable; its own 0700 directory, a 1777 one and one of its group take files owned 1000:1000", async () => {
    prepare();
    // The image's layer, as a snapshotter keeps it, and the container's upper layer.
    const lower = join(base, "snapshots", "1", "fs");
    const upper = join(base, "snapshots", "2", "fs");
    const work = join(base, "snapshots", "2", "work");
    for (const d of [lower, upper, work, rootfs, join(lower, "etc"), join(lower, "app"), join(lower, "tmp")])
      mkdirSync(d, { recursive: true });
    writeFileSync(join(lower, "public.txt"), "for all\n", { mode: 0o644 });
    writeFileSync(join(lower, "secret.txt"), "root's\n", { mode: 0o600 });
    writeFileSync(join(lower, "app", "key"), "the app's\n", { mode: 0o600 });
    chownSync(join(lower, "app", "key"), 1000, 1000);
    chownSync(join(lower, "app"), 1000, 1000);
    chmodSync(join(lower, "app"), 0o700);
    chmodSync(join(lower, "tmp"), 0o1777);
    const [r, e] = mount("overlay", rootfs, "overlay", 0, `lowerdir=${lower},upperdir=${upper},workdir=${work}`);
    expect(`${r} ${e}`).toBe("0 0");
    // A volume: directories of root, of the user, of its group.
    const vol = join(base, "vol");
    const dirs = { rootOwned: join(vol, "rootdir"), mine: join(vol, "mine"), group: join(vol, "group") };
    for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
    chownSync(dirs.mine, 1000, 1000);
    chownSync(dirs.group, 0, 1000);
    chmodSync(dirs.group, 0o775);

    await mountViewAs({ root: rootfs, readOnly: false, volumes: [{ source: vol, destination: "/data", readOnly: false }] }, view, {
      uid: 1000,
      gid: 1000,
      additionalGids: [],
    });
    const info = readFileSync("/proc/self/mountinfo", "utf8");
    expect(info).toMatch(new RegExp(` ${view}/data \\S*idmapped`));
    // Nothing of the layers' copies is left mounted; the rootfs is an overlay again.
    const points = info.split("\n").map((l) => l.split(" ")[4] ?? "");
    expect(points.filter((p) => p.startsWith(`${view}/.`))).toEqual([]);
    expect(info).toMatch(new RegExp(` ${rootfs} \\S+ [^\\n]*- overlay `));

    // The runs in a process of their own, as in the daemon (fixtures/run-in-view.ts says why).
    const scratch = join(base, "scratch");
    mkdirSync(scratch);
    const runs = (list: string[][]): string[] => {
      const r = Bun.spawnSync(
        [process.execPath, join(import.meta.dir, "fixtures", "run-in-view.ts"), view, WASM_DIR, scratch, JSON.stringify(list)],
        { stdout: "pipe", stderr: "pipe" },
      );
      if (r.exitCode !== 0) throw new Error(`run-in-view: ${r.stderr.toString()}`);
      return JSON.parse(r.stdout.toString());
    };
    const denied = ["/etc/x", "/x", "/data/rootdir/x"];
    const allowed = [
      ["/app/x", join(upper, "app", "x")],
      ["/tmp/x", join(upper, "tmp", "x")],
      ["/data/mine/x", join(dirs.mine, "x")],
      ["/data/group/x", join(dirs.group, "x")],
    ] as const;
    const write = (path: string) => ["wasi-demo-app", "write", path, "written"];
    const results = runs([
      ["escape", "/public.txt", "/app/key", "/secret.txt"],
      ...denied.map(write),
      ...allowed.map(([path]) => write(path)),
      // Copied up by a write, the user's file stays the user's.
      write("/app/key"),
    ]);
    // Reads: root's 0644 file, the user's own 0600 file in its 0700 directory; not root's 0600 one.
    expect(results[0]).toBe("0 /public.txt: ok for all\n/app/key: ok the app's\n/secret.txt: error Permission denied");
    expect(results.slice(1, 1 + denied.length)).toEqual(denied.map((p) => `1 open ${p}: Permission denied`));
    expect(existsSync(join(upper, "etc", "x"))).toBe(false);
    expect(existsSync(join(dirs.rootOwned, "x"))).toBe(false);
    for (const [k, [path, host]] of allowed.entries()) {
      expect(`${path}: ${results[1 + denied.length + k]}`).toBe(`${path}: 0 exiting`);
      const s = statSync(host);
      expect(`${path}: ${s.uid}:${s.gid}`).toBe(`${path}: 1000:1000`);
    }
    expect(results.at(-1)).toBe("0 exiting");
    const key = statSync(join(upper, "app", "key"));
    expect(`${key.uid}:${key.gid} ${(key.mode & 0o777).toString(8)}`).toBe("1000:1000 600");
  });
});
