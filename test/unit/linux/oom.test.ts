// The OOM counter of src/linux/oom.ts on cgroup v1 and v2 layouts, with fixture files in
// the kernel's formats (this host is cgroup v1: the v2 files cannot be made here for real):
// which cgroup a /proc/<pid>/cgroup names, the oom_kill line of memory.events and
// memory.oom_control, and a watch whose counter rises between create and exit.
import { afterEach, describe, expect, test } from "bun:test";
import { closeSync, fstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ExitWatcher } from "../../../src/linux/exit-watcher.ts";
import { memoryCgroupOf, oomCounterFile, oomKillCount, readOomKills, watchOom } from "../../../src/linux/oom.ts";

const FIXTURES = join(import.meta.dir, "fixtures/oom");
const fixture = (name: string) => readFileSync(join(FIXTURES, name), "utf8");

let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

describe("which memory cgroup", () => {
  test("v2 (only 0::): the unified path under the cgroup root", () => {
    expect(memoryCgroupOf(fixture("proc-cgroup-v2.txt"), "/sys/fs/cgroup")).toEqual({
      version: 2,
      dir: "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abc123.scope",
    });
  });

  test("v1 and hybrid (a memory line besides 0::): the memory hierarchy's path, not the unified one", () => {
    expect(memoryCgroupOf(fixture("proc-cgroup-v1.txt"), "/sys/fs/cgroup")).toEqual({
      version: 1,
      dir: "/sys/fs/cgroup/memory/k8s/pod1/ctr1",
    });
  });

  test("no memory controller and no unified line: none", () => {
    expect(memoryCgroupOf("3:cpu:/x\n1:name=systemd:/x\n")).toBeNull();
    expect(memoryCgroupOf("")).toBeNull();
  });

  test("each version's counter file", () => {
    expect(oomCounterFile({ version: 1, dir: "/c" })).toBe("/c/memory.oom_control");
    expect(oomCounterFile({ version: 2, dir: "/c" })).toBe("/c/memory.events");
  });
});

describe("the oom_kill line", () => {
  test("v2 memory.events: oom_kill, not oom (reclaim failures) nor oom_group_kill", () => {
    expect(oomKillCount(fixture("memory.events-oom.txt"))).toBe(2);
    expect(oomKillCount(fixture("memory.events-clean.txt"))).toBe(0);
  });

  test("v1 memory.oom_control", () => {
    expect(oomKillCount(fixture("memory.oom_control-oom.txt"))).toBe(1);
  });

  test("a kernel without the counter: 0 (never reports an OOM)", () => {
    expect(oomKillCount(fixture("memory.events-old-kernel.txt"))).toBe(0);
  });
});

/** A fake /proc and cgroup root: pid 42 in `procCgroup`, its counter file holding `counter`. */
function layout(procCgroup: string, counter: string) {
  const root = mkdtempSync(join(tmpdir(), "bunwasi-oom-"));
  dirs.push(root);
  const proc = join(root, "proc");
  const cgroupRoot = join(root, "cgroup");
  mkdirSync(join(proc, "42"), { recursive: true });
  writeFileSync(join(proc, "42/cgroup"), procCgroup);
  const cg = memoryCgroupOf(procCgroup, cgroupRoot)!;
  mkdirSync(cg.dir, { recursive: true });
  const file = oomCounterFile(cg);
  writeFileSync(file, counter);
  return { proc, cgroupRoot, cg, file };
}

describe("watchOom: the count at create is the baseline", () => {
  test("v2: a kill after the watch began is reported; none is not", async () => {
    const l = layout(fixture("proc-cgroup-v2.txt"), fixture("memory.events-clean.txt"));
    const watch = (await watchOom(42, { root: l.cgroupRoot, proc: l.proc }))!;
    expect(await watch.killed()).toBe(false);
    writeFileSync(l.file, fixture("memory.events-oom.txt"));
    expect(await watch.killed()).toBe(true);
  });

  test("v1: kills counted before the watch do not count", async () => {
    const l = layout(fixture("proc-cgroup-v1.txt"), fixture("memory.oom_control-oom.txt"));
    const watch = (await watchOom(42, { root: l.cgroupRoot, proc: l.proc }))!;
    expect(await readOomKills(l.cg)).toBe(1);
    expect(await watch.killed()).toBe(false);
    writeFileSync(l.file, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    expect(await watch.killed()).toBe(true);
  });

  test("a cgroup gone by exit is no OOM; a process or cgroup not found gives no watch", async () => {
    const l = layout(fixture("proc-cgroup-v2.txt"), fixture("memory.events-clean.txt"));
    const watch = (await watchOom(42, { root: l.cgroupRoot, proc: l.proc }))!;
    rmSync(l.file);
    expect(await watch.killed()).toBe(false);
    expect(await watchOom(43, { root: l.cgroupRoot, proc: l.proc })).toBeNull();
    expect(await watchOom(42, { root: l.cgroupRoot, proc: l.proc })).toBeNull();
  });

  test("this host's own memory cgroup is found and read (the real files, v1 or v2)", async () => {
    const watch = await watchOom(process.pid);
    expect(watch).not.toBeNull();
    expect(await watch!.killed()).toBe(false);
  });
});

describe("live notification (v2: inotify on memory.events), polled with the exit watcher's pidfds", () => {
  test("a kill is told as it is counted, and answered once (the exit then finds nothing new)", async () => {
    const l = layout(fixture("proc-cgroup-v2.txt"), fixture("memory.events-clean.txt"));
    const watcher = new ExitWatcher({ reapIntervalMs: 0 });
    let told = 0;
    let tell: () => void = () => {};
    const toldOnce = new Promise<void>((r) => (tell = r));
    const watch = (await watchOom(42, {
      root: l.cgroupRoot,
      proc: l.proc,
      live: {
        watchReadable: (fd, cb) => watcher.watchReadable(fd, cb),
        onKill: () => {
          told++;
          tell();
        },
      },
    }))!;
    try {
      writeFileSync(l.file, fixture("memory.events-oom.txt"));
      await toldOnce;
      expect(told).toBe(1);
      expect(await watch.killed()).toBe(false);
    } finally {
      watch.close();
      watch.close(); // idempotent
      await watcher.close();
    }
  });

  test("a second close never closes an fd opened since under the same number", async () => {
    const l = layout(fixture("proc-cgroup-v2.txt"), fixture("memory.events-clean.txt"));
    const watch = (await watchOom(42, { root: l.cgroupRoot, proc: l.proc, live: { watchReadable: () => () => {}, onKill: () => {} } }))!;
    watch.close();
    // The lowest free number is the one just closed: this open takes it.
    const fd = openSync(l.file, "r");
    try {
      watch.close();
      expect(fstatSync(fd).isFile()).toBe(true);
    } finally {
      closeSync(fd);
    }
  });
});
