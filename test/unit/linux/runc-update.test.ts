// src/linux/runc.ts's update and global flags against a stand-in runtime (a shell script
// that records its arguments and its stdin): `update --resources -` gets the LinuxResources
// JSON on stdin, --systemd-cgroup goes before the command when asked for, and a failure
// carries the runtime's last stderr line.
import { afterAll, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Runc, RuncError } from "../../../src/linux/runc.ts";

const dir = mkdtempSync(join(tmpdir(), "bunwasi-runc-update-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const args = join(dir, "args");
const stdin = join(dir, "stdin");
const script = join(dir, "fake-runc");
writeFileSync(
  script,
  `#!/bin/sh
echo "$@" >> ${args}
case "$*" in
  *" update "*) cat > ${stdin}; [ "$(tail -c 1 ${stdin})" = x ] && { echo "bad resources" >&2; exit 1; } ;;
esac
exit 0
`,
);
chmodSync(script, 0o755);

test("update: --resources - with the JSON on stdin", async () => {
  const r = new Runc({ binary: script, root: "/run/r" });
  await r.update("c1", '{"memory":{"limit":268435456}}');
  expect(readFileSync(args, "utf8").trim().split("\n").at(-1)).toBe("--root /run/r update --resources - c1");
  expect(readFileSync(stdin, "utf8")).toBe('{"memory":{"limit":268435456}}');
});

test("systemdCgroup: --systemd-cgroup on every command, after --root", async () => {
  const r = new Runc({ binary: script, root: "/run/r", systemdCgroup: true });
  await r.start("c1");
  await r.update("c1", "{}");
  expect(readFileSync(args, "utf8").trim().split("\n").slice(-2)).toEqual([
    "--root /run/r --systemd-cgroup start c1",
    "--root /run/r --systemd-cgroup update --resources - c1",
  ]);
});

test("update: a refusal is the runtime's own words", async () => {
  const r = new Runc({ binary: script, root: "/run/r" });
  const e = await r.update("c1", "x").catch((err: unknown) => err);
  expect(e).toBeInstanceOf(RuncError);
  expect((e as RuncError).message).toBe("fake-runc update: bad resources");
});
