// Which of a spec's mounts an in-process module gets as WASI preopens (src/daemon/host.ts
// volumePreopens): bind-mounted directories at their destination, read-only when the mount
// is; never kernel filesystems, files, or anything from or onto /proc, /sys, /dev.
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { volumePreopens } from "../../../src/daemon/host.ts";

const dir = mkdtempSync(join(tmpdir(), "vol-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("bind-mounted directories become preopens; the rest does not", async () => {
  const data = join(dir, "data");
  const cfg = join(dir, "cfg");
  mkdirSync(data);
  mkdirSync(cfg);
  writeFileSync(join(dir, "resolv.conf"), "nameserver 127.0.0.1\n");
  const got = await volumePreopens([
    { destination: "/proc", type: "proc", source: "proc" },
    { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid"] },
    { destination: "/sys", type: "sysfs", source: "sysfs", options: ["ro"] },
    { destination: "/data", type: "bind", source: data, options: ["rbind", "rw"] },
    { destination: "/etc/config/", source: cfg, options: ["rbind", "ro"] },
    { destination: "/etc/resolv.conf", type: "bind", source: join(dir, "resolv.conf"), options: ["rbind", "ro"] },
    { destination: "/host-proc", type: "bind", source: "/proc", options: ["rbind"] },
    { destination: "/dev/mine", type: "bind", source: data, options: ["rbind"] },
    { destination: "/", type: "bind", source: data, options: ["rbind"] },
    { destination: "/gone", type: "bind", source: join(dir, "nope"), options: ["rbind"] },
    { destination: "relative", type: "bind", source: data, options: ["rbind"] },
  ]);
  expect(got).toEqual([
    { hostPath: data, guestPath: "/data", readOnly: false },
    { hostPath: cfg, guestPath: "/etc/config", readOnly: true },
  ]);
});
