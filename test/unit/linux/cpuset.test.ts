// The cpuset decision of the shared-mode daemon (src/linux/cpuset.ts): the kernel's list
// syntax, what is refused, when a run is confined (and to what) and when nothing changes; and
// the affinity calls themselves, on a thread of this test.
import { expect, test } from "bun:test";
import { CpusetError, cpusetPlacement, daemonPlaces, formatCpuList, parseCpuList } from "../../../src/linux/cpuset.ts";
import { gettid, schedGetaffinity, schedSetaffinity } from "../../../src/linux/libc.ts";

test("parseCpuList reads the kernel's list syntax, ascending without repeats", () => {
  expect(parseCpuList("1")).toEqual([1]);
  expect(parseCpuList("0-3")).toEqual([0, 1, 2, 3]);
  expect(parseCpuList("6,0-2, 2 ,4")).toEqual([0, 1, 2, 4, 6]);
  expect(parseCpuList("3-3")).toEqual([3]);
});

test("parseCpuList refuses what the kernel's cpuset files refuse", () => {
  for (const bad of ["", "a", "1-", "-1", "1,,2", "3-1", "1.5", "0x1", "1 2", "8192", "0-9000"])
    expect(() => parseCpuList(bad)).toThrow(CpusetError);
});

test("formatCpuList writes ranges as /proc's Cpus_allowed_list does", () => {
  expect(formatCpuList([1])).toBe("1");
  expect(formatCpuList([0, 1, 2, 4, 6, 7])).toBe("0-2,4,6-7");
  expect(formatCpuList([])).toBe("");
});

const two = { cpus: [0, 1], mems: [0] };

test("a cpuset covering every CPU the daemon may use changes nothing (pools stay)", () => {
  expect(cpusetPlacement({}, two)).toEqual({});
  expect(cpusetPlacement({ cpus: "0-1" }, two)).toEqual({});
  // More than the daemon has (the node's shared pool on a bigger cgroup): still every one of ours.
  expect(cpusetPlacement({ cpus: "0-7" }, two)).toEqual({});
  // Empty is unset, as runc reads it.
  expect(cpusetPlacement({ cpus: "", mems: "" }, two)).toEqual({});
});

test("a cpuset leaving out one of the daemon's CPUs confines the run to those it names", () => {
  expect(cpusetPlacement({ cpus: "1" }, two)).toEqual({ cpus: [1] });
  // Cut to the daemon's CPUs, as the kernel cuts a cgroup's cpuset to its parent's.
  expect(cpusetPlacement({ cpus: "1-5" }, two)).toEqual({ cpus: [1] });
  expect(cpusetPlacement({ cpus: "2,5" }, { cpus: [0, 2, 4, 5], mems: [0] })).toEqual({ cpus: [2, 5] });
});

test("a cpuset naming no CPU the daemon may use, or unparsable, is refused", () => {
  expect(() => cpusetPlacement({ cpus: "7" }, two)).toThrow(/names no CPU this node lets the daemon use \(0-1\)/);
  expect(() => cpusetPlacement({ cpus: "one" }, two)).toThrow(/not a list of numbers/);
});

test("mems must cover the daemon's memory nodes: it cannot bind a run's memory to fewer", () => {
  expect(cpusetPlacement({ cpus: "1", mems: "0" }, two)).toEqual({ cpus: [1] });
  expect(cpusetPlacement({ mems: "0-3" }, two)).toEqual({});
  expect(() => cpusetPlacement({ mems: "1" }, { cpus: [0, 1], mems: [0, 1] })).toThrow(/leaves out memory node 0/);
  expect(() => cpusetPlacement({ mems: "x" }, two)).toThrow(CpusetError);
});

test("daemonPlaces reads this process's CPUs and memory nodes as /proc shows them", async () => {
  const places = daemonPlaces();
  const status = await Bun.file("/proc/self/status").text();
  expect(formatCpuList(places.cpus)).toBe(/^Cpus_allowed_list:\s*(.*)$/m.exec(status)?.[1] ?? "none");
  expect(formatCpuList(places.mems)).toBe(/^Mems_allowed_list:\s*(.*)$/m.exec(status)?.[1] ?? "none");
});

test("schedSetaffinity confines a thread by its id, and /proc says so", async () => {
  const [own] = schedGetaffinity(0);
  expect(own?.length).toBeGreaterThan(0);
  const first = (own as number[])[0] as number;
  // A thread of our own to confine: a Worker that tells its tid and waits.
  const w = new Worker(
    URL.createObjectURL(
      new Blob(
        [
          `const { gettid } = require(${JSON.stringify(require.resolve("../../../src/linux/libc.ts"))});
           self.onmessage = () => {}; postMessage(gettid());`,
        ],
        { type: "application/javascript" },
      ),
    ),
  );
  try {
    const tid = await new Promise<number>((r) => (w.onmessage = (ev) => r(ev.data)));
    expect(tid).not.toBe(gettid());
    expect(schedSetaffinity(tid, [first])).toEqual([0, 0]);
    const status = await Bun.file(`/proc/self/task/${tid}/status`).text();
    expect(/^Cpus_allowed_list:\s*(.*)$/m.exec(status)?.[1]).toBe(String(first));
    expect(schedGetaffinity(tid)[0]).toEqual([first]);
    // This thread was not moved.
    expect(schedGetaffinity(0)[0]).toEqual(own);
  } finally {
    w.terminate();
  }
});
