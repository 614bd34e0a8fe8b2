// The daemon's systemd unit (scripts/systemd/containerd-wasmtimed.service): what it promises
// the node's other pods (docs/ARCHITECTURE.md, "Threat model", "Memory").
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const UNIT = readFileSync(join(import.meta.dir, "../../../scripts/systemd/containerd-wasmtimed.service"), "utf8");

test("the OOM killer is not told to spare the daemon at other pods' expense (OOMScoreAdjust not below 0)", () => {
  const values = [...UNIT.matchAll(/^OOMScoreAdjust=(-?\d+)$/gm)].map((m) => Number(m[1]));
  expect(values).toEqual([0]);
});

test("reload hands over (docs/ARCHITECTURE.md, 'Hand-over'): ExecReload takes over on ExecStart's socket, its pid file is PIDFile=, and stop signals the main process only", () => {
  const one = (key: string) => {
    const v = [...UNIT.matchAll(new RegExp(`^${key}=(.*)$`, "gm"))].map((m) => m[1] as string);
    expect(v).toHaveLength(1);
    return v[0] as string;
  };
  const start = one("ExecStart").split(" ");
  const reload = one("ExecReload").split(" ");
  const flag = (argv: string[], f: string) => argv[argv.indexOf(f) + 1];
  expect(reload[0]).toBe(start[0] as string);
  expect(flag(reload, "--socket")).toBe(flag(start, "--socket") as string);
  expect(flag(start, "--pid-file")).toBe(one("PIDFile"));
  expect(flag(reload, "--pid-file")).toBe(one("PIDFile"));
  expect(reload).toContain("--take-over");
  expect(reload).toContain("--detach");
  expect(start).not.toContain("--take-over");
  // The draining daemon (and runc's containers) are not the main process: not killed with it.
  expect(one("KillMode")).toBe("process");
  expect(one("Type")).toBe("simple");
});
