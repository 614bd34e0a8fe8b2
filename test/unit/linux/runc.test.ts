// src/linux/runc.ts against a stand-in runtime (a shell script): calls run side by side
// (a slow one does not hold up the next), the pid comes from the pid file, and a failure
// carries the runtime's own words, from its JSON log or its stderr.
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Runc, RuncError } from "../../../src/linux/runc.ts";

const dir = mkdtempSync(join(tmpdir(), "bunwasi-runc-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const fifo = join(dir, "release");
const calls = join(dir, "calls");
const script = join(dir, "fake-runc");
// Arguments: --root R [--log F --log-format json] COMMAND ARGS…
writeFileSync(
  script,
  `#!/bin/sh
root=$2; shift 2
log=""
if [ "$1" = --log ]; then log=$2; shift 4; fi
echo "$@" >> ${calls}
case "$1" in
  start) [ "$2" = slow ] && read line < ${fifo} ;;
  create)
    if [ "$6" = bad ]; then
      echo '{"level":"info","msg":"creating"}' >> "$log"
      echo '{"level":"error","msg":"exec format error"}' >> "$log"
      exit 1
    fi
    echo 4321 > "$5" ;;
  kill) echo "container not running" >&2; exit 1 ;;
  ps) echo '[7,8]' ;;
esac
exit 0
`,
);
chmodSync(script, 0o755);
Bun.spawnSync(["mkfifo", fifo]);

describe("Runc", () => {
  const runc = new Runc({ binary: script, root: join(dir, "root") });

  test("a slow call does not hold up the others (asynchronous spawn)", async () => {
    const slow = runc.start("slow");
    // Finishes while the slow one still waits on the fifo; a synchronous spawn could not.
    expect(await runc.ps("fast")).toEqual([7, 8]);
    expect(readFileSync(calls, "utf8")).toContain("ps --format json fast");
    const w = await open(fifo, "w");
    await w.write("go\n");
    await w.close();
    await slow;
  });

  test("create answers the pid the runtime wrote", async () => {
    const pid = await runc.create("c1", "/b", join(dir, "c1.pid"), [0, 1, 2], join(dir, "c1.log"));
    expect(pid).toBe(4321);
  });

  test("a failure says which command and the runtime's reason (stderr)", async () => {
    const e = await runc.kill("c1", 15, false).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(RuncError);
    expect((e as RuncError).message).toBe("fake-runc kill: container not running");
  });

  test("with a log file, the reason is its last error line", async () => {
    const devNull = [0, 1, 2] as [number, number, number];
    const e = await runc.create("bad", "/b", join(dir, "bad.pid"), devNull, join(dir, "bad.log")).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(RuncError);
    expect((e as RuncError).message).toBe("fake-runc create: exec format error");
  });
});
