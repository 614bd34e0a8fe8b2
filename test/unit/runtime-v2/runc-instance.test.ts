// The runc Instance (src/runtime-v2/runc-instance.ts) against a stand-in runtime (a shell
// script that logs its arguments and starts a `sleep` as the container's init or exec process,
// which is then an orphan reparented to this test process, a child subreaper as the server is):
// what runc is asked and with which root and flags (runtime options as runc-v2 applies them),
// the Create's undo stack (runc's delete pushed before its create, run by a failed create),
// the compile cache's work waited for by a failed create, the init's exit after a kill, an
// init runc names that is gone, and an exec process's file, start, kill and delete.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { wasmtime } from "../../../src/engines/wasmtime/index.ts";
import { ExitWatcher } from "../../../src/linux/exit-watcher.ts";
import { memoryCgroupOf, readOomKills } from "../../../src/linux/oom.ts";
import { becomeSubreaper } from "../../../src/linux/subreaper.ts";
import { runcOf } from "../../../src/runtime-v2/common-host-calls.ts";
import { createRuncInstance, type RuncParts } from "../../../src/runtime-v2/runc-instance.ts";
import type { InstanceRequest } from "../../../src/task/instance.ts";
import type { RuntimeOptions } from "../../../src/task/runtime-options.ts";
import { UndoStack } from "../../../src/task/undo.ts";

const watcher = new ExitWatcher({ reapIntervalMs: 0 });
beforeAll(() => becomeSubreaper());
afterAll(() => watcher.close());

let dir: string;
let script: string;
let calls: string;
const logs: string[] = [];
const parts = (): RuncParts => ({ watcher, engine: wasmtime, log: (m) => logs.push(m) });

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "runc-instance-"));
  calls = join(dir, "calls");
  script = join(dir, "fake-runc");
  // Global flags: --root R [--systemd-cgroup] [--log F --log-format json], then the command.
  // An init or exec process is a `sleep` whose pid goes in the pid file; kill signals the init.
  writeFileSync(
    script,
    `#!/bin/sh
echo "$(basename "$0") $@" >> ${calls}
log=""
while [ "\${1#--}" != "$1" ]; do
  case "$1" in
    --systemd-cgroup) shift ;;
    --log) log=$2; shift 2 ;;
    *) shift 2 ;;
  esac
done
for last; do :; done
spawn() { sleep 30 </dev/null >/dev/null 2>&1 & echo $! > "$1"; echo $! >> ${dir}/pids; }
case "$1" in
  create)
    case "$last" in
      bad) echo '{"level":"error","msg":"exec format error"}' >> "$log"; exit 1 ;;
      gone) true & gone=$!; wait $gone; echo $gone > "$5" ;;
      *) spawn "$5" ;;
    esac
    cp "$5" ${dir}/pid-$last ;;
  exec) spawn "$6" ;;
  kill) if [ "$2" = --all ]; then shift; fi; kill -$3 $(cat ${dir}/pid-$2) ;;
  delete) if [ -e ${dir}/delete-fails ]; then echo "device or resource busy" >&2; exit 1; fi ;;
  ps) echo "[$(cat ${dir}/pid-$last)]" ;;
  events) echo '{"data":{"pids":{"current":1}}}' ;;
  update) cat > ${dir}/update-$last ;;
esac
exit 0
`,
  );
  chmodSync(script, 0o755);
  logs.length = 0;
});

afterEach(() => {
  // What is left of the stand-ins: each is watched (so reaped once killed).
  for (const pid of spawned()) {
    try {
      process.kill(pid, 9);
    } catch {} // exited already
  }
  rmSync(dir, { recursive: true, force: true });
});

/** The pids of the processes the stand-in started, in order. */
function spawned(): number[] {
  if (!existsSync(join(dir, "pids"))) return [];
  return readFileSync(join(dir, "pids"), "utf8").trim().split("\n").map(Number);
}

function request(id: string, undo = new UndoStack(), over: Partial<InstanceRequest> = {}): InstanceRequest {
  const workDir = join(dir, "state", id);
  mkdirSync(workDir, { recursive: true });
  return {
    namespace: "k8s.io",
    id,
    bundle: join(dir, "bundle"),
    workDir,
    io: { stdio: [0, 1, 2], console: null },
    runtimeOptions: null,
    undo,
    onOom: () => {},
    ...over,
  };
}

const callLines = () => readFileSync(calls, "utf8").trim().split("\n");
const paths = () => ({ stateRoot: join(dir, "run"), dataRoot: join(dir, "data"), compileCacheDir: join(dir, "cache") });

describe("the runc instance", () => {
  test("create: runc create of the bundle, its files in the work dir, the init's pid; the Create's undo deletes it", async () => {
    const undo = new UndoStack();
    const req = request("c1", undo);
    const inst = await createRuncInstance(
      runcOf({ paths: paths(), runtimeBinary: script }, "k8s.io", null),
      req,
      { runtimeBundle: "/derived", kind: "native" },
      parts(),
    );
    expect(inst.pid).toBe(spawned()[0]!);
    expect(inst.kind).toBe("native");
    const root = join(dir, "run/runc/k8s.io");
    expect(callLines()).toEqual([
      `fake-runc --root ${root} --log ${req.workDir}/runtime.log --log-format json create --bundle /derived --pid-file ${req.workDir}/init.pid c1`,
    ]);
    expect(await undo.run()).toEqual([]);
    expect(callLines().at(-1)).toBe(`fake-runc --root ${root} delete --force c1`);
  });

  test("runtime options choose the runc: BinaryName, Root (the namespace appended), SystemdCgroup; none: the host's binary and the namespace's root", async () => {
    const other = join(dir, "other-runc");
    symlinkSync(script, other);
    const options: RuntimeOptions = { binaryName: other, root: "/var/my-root", systemdCgroup: true };
    const host = { paths: paths(), runtimeBinary: script };
    for (const [id, o] of [
      ["c1", options],
      ["c2", { systemdCgroup: true }],
      ["c3", null],
    ] as const) {
      const undo = new UndoStack();
      await createRuncInstance(
        runcOf(host, "k8s.io", o),
        request(id, undo, { runtimeOptions: o }),
        { runtimeBundle: "/b", kind: "native" },
        parts(),
      );
      await undo.run();
    }
    const creates = callLines().filter((l) => l.includes(" create "));
    expect(creates[0]).toStartWith("other-runc --root /var/my-root/k8s.io --systemd-cgroup --log");
    expect(creates[1]).toStartWith(`fake-runc --root ${join(dir, "run/runc/k8s.io")} --systemd-cgroup --log`);
    expect(creates[2]).toStartWith(`fake-runc --root ${join(dir, "run/runc/k8s.io")} --log`);
  });

  test("a failed create answers with runc's words once the compile cache's work is done, and its undo deletes what runc may hold", async () => {
    const order: string[] = [];
    const undo = new UndoStack();
    const req = request("bad", undo);
    const warming = Promise.withResolvers<void>();
    const warm = () => warming.promise.then(() => void order.push("warm done"));
    const created = createRuncInstance(
      runcOf({ paths: paths(), runtimeBinary: script }, "default", null),
      req,
      { runtimeBundle: "/b", kind: "wasm", warm },
      parts(),
    );
    const answered = created.then(
      () => order.push("created"),
      (e: Error) => order.push(`failed: ${e.message}`),
    );
    // runc has failed (its log says so as it exits); the answer waits for the compile.
    while (!existsSync(join(req.workDir, "runtime.log"))) await Bun.sleep(1);
    for (let i = 0; i < 20; i++) await Bun.sleep(1);
    expect(order).toEqual([]);
    warming.resolve();
    await answered;
    expect(order).toEqual(["warm done", "failed: fake-runc create: exec format error"]);
    expect(await undo.run()).toEqual([]);
    expect(callLines().at(-1)).toEndWith("delete --force bad");
    expect(spawned()).toEqual([]);
  });

  test("a runtime delete that fails is said by the undo stack, and kept for a retry", async () => {
    const undo = new UndoStack();
    await createRuncInstance(
      runcOf({ paths: paths(), runtimeBinary: script }, "default", null),
      request("c1", undo),
      { runtimeBundle: "/b", kind: "native" },
      parts(),
    );
    writeFileSync(join(dir, "delete-fails"), "");
    expect(await undo.run()).toEqual(["runtime delete: fake-runc delete: device or resource busy"]);
    rmSync(join(dir, "delete-fails"));
    expect(await undo.run()).toEqual([]);
  });

  test("start, pids, stats, update and kill go to runc; the init's exit (128+signal) is the instance's", async () => {
    const undo = new UndoStack();
    const inst = await createRuncInstance(
      runcOf({ paths: paths(), runtimeBinary: script }, "default", null),
      request("c1", undo),
      { runtimeBundle: "/b", kind: "native" },
      parts(),
    );
    await inst.start();
    expect(await inst.pids()).toEqual([inst.pid]);
    // runc's figures, and the OOM kill count of the init's memory cgroup (runc leaves it out).
    const cg = memoryCgroupOf(readFileSync(`/proc/${inst.pid}/cgroup`, "utf8"));
    const kills = cg ? await readOomKills(cg) : null;
    expect(await inst.stats()).toEqual(kills === null ? { pids: { current: 1 } } : { pids: { current: 1 }, oomKills: kills });
    await inst.update('{"memory":{"limit":1048576}}');
    expect(readFileSync(join(dir, "update-c1"), "utf8")).toBe('{"memory":{"limit":1048576}}');
    await inst.kill(15, false);
    expect((await inst.exited).status).toBe(143);
    expect(callLines().map((l) => l.split(" ").slice(3).join(" "))).toContain("kill c1 15");
    expect(await undo.run()).toEqual([]);
  });

  test("an init that runc names but that is gone already: exited answers 255 (it never rejects)", async () => {
    const undo = new UndoStack();
    const inst = await createRuncInstance(
      runcOf({ paths: paths(), runtimeBinary: script }, "default", null),
      request("gone", undo),
      { runtimeBundle: "/b", kind: "native" },
      parts(),
    );
    expect((await inst.exited).status).toBe(255);
    await undo.run();
  });

  test("exec: its process is a file of the work dir for runc exec; start runs it, kill signals it, delete removes its files", async () => {
    // A native container: its rootfs holds a script, which an exec's args[0] names.
    const bundle = join(dir, "bundle");
    mkdirSync(join(bundle, "rootfs/bin"), { recursive: true });
    writeFileSync(join(bundle, "rootfs/bin/tool"), "#!/bin/sh\n", { mode: 0o755 });
    writeFileSync(
      join(bundle, "config.json"),
      JSON.stringify({ ociVersion: "1.0.2", process: { args: ["/bin/tool"], cwd: "/", env: ["PATH=/bin"] }, root: { path: "rootfs" } }),
    );
    const undo = new UndoStack();
    const req = request("c1", undo);
    const inst = await createRuncInstance(
      runcOf({ paths: paths(), runtimeBinary: script }, "default", null),
      req,
      { runtimeBundle: bundle, kind: "native" },
      parts(),
    );
    const process = { args: ["tool", "x"], cwd: "/", env: ["PATH=/bin"] };
    const run = await inst.exec("e1", process);
    const file = join(req.workDir, "exec-e1.json");
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual(process);
    expect(() => run.kill(15)).toThrow("has not started");
    const pid = await run.start({ stdio: [0, 1, 2], console: null });
    expect(pid).toBe(spawned()[1]!);
    expect(callLines().at(-1)).toEndWith(`exec --detach --process ${file} --pid-file ${join(req.workDir, "exec-e1.pid")} c1`);
    run.kill(9);
    expect((await run.exited).status).toBe(137);
    run.delete();
    expect(existsSync(file)).toBe(false);
    await undo.run();
  });
});
