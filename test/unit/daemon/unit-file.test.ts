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
