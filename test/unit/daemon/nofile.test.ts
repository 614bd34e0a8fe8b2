// The daemon's open-file limit (src/daemon/nofile.ts): raised to the hard limit at start, a
// warning naming LimitNOFILE when that leaves room for fewer than 1000 wasm containers. Each
// case runs in a child whose limits `ulimit` set (a lowered hard limit cannot be raised back
// without CAP_SYS_RESOURCE, so not in this process).
import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { containersFor, FDS_PER_CONTAINER, WARN_BELOW_CONTAINERS } from "../../../src/daemon/nofile.ts";
import { RLIM_INFINITY } from "../../../src/linux/libc.ts";
import { tempDir } from "../../support/temp-dirs.ts";

const REPO = resolve(import.meta.dir, "../../..");

test("room per limit: 18 fds a container (measured); unlimited is unlimited", () => {
  expect(FDS_PER_CONTAINER).toBe(18);
  expect(containersFor(1024n)).toBe(56);
  expect(containersFor(1048576n)).toBe(58254);
  expect(containersFor(RLIM_INFINITY)).toBe(Number.POSITIVE_INFINITY);
});

/** raiseNofile in a child started under `ulimit -Sn soft -Hn hard`: its log lines and the limits after. */
async function inChild(soft: number, hard: number): Promise<{ lines: [string, string][]; after: { soft: string; hard: string } }> {
  const dir = tempDir("nofile-");
  const script = join(dir, "child.ts");
  writeFileSync(
    script,
    `import { raiseNofile } from ${JSON.stringify(join(REPO, "src/daemon/nofile.ts"))};
import { getrlimit, RLIMIT_NOFILE } from ${JSON.stringify(join(REPO, "src/linux/libc.ts"))};
const lines: [string, string][] = [];
raiseNofile((m, l = "info") => lines.push([m, l]));
const r = getrlimit(RLIMIT_NOFILE) as { soft: bigint; hard: bigint };
console.log(JSON.stringify({ lines, after: { soft: String(r.soft), hard: String(r.hard) } }));
`,
  );
  const p = Bun.spawn(["sh", "-c", `ulimit -Sn ${soft} && ulimit -Hn ${hard} && exec "$0" "$1"`, process.execPath, script], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`child failed (${code}): ${err}`);
  return JSON.parse(out);
}

test("the soft limit is raised to the hard one; room for 1000 containers or more: no warning", async () => {
  const { lines, after } = await inChild(1024, 20000);
  expect(after).toEqual({ soft: "20000", hard: "20000" });
  expect(lines.filter(([, l]) => l === "warning")).toEqual([]);
});

test("a hard limit with room for fewer than 1000 containers: a warning that says how many and names LimitNOFILE", async () => {
  const { lines, after } = await inChild(256, 4096);
  expect(after).toEqual({ soft: "4096", hard: "4096" });
  expect(containersFor(4096n)).toBeLessThan(WARN_BELOW_CONTAINERS);
  expect(lines.filter(([, l]) => l === "warning").map(([m]) => m)).toEqual([
    "open-file limit 4096 (hard 4096) leaves room for about 227 wasm containers (~18 fds each); raise it (systemd: LimitNOFILE= in containerd-wasmtimed.service, or ulimit -n)",
  ]);
});
