// src/oci/rootfs.ts: option parsing everywhere; real mount(2)/umount2(2) when root, through
// mountRootfsAsync, the function the Task service mounts with.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MS, mountRootfsAsync, parseMountOptions, unmountRootfs } from "../../../src/oci/rootfs.ts";

describe("parseMountOptions", () => {
  test("flags, data and propagation", () => {
    expect(parseMountOptions(["lowerdir=/a:/b", "upperdir=/u", "workdir=/w", "index=off"])).toEqual({
      flags: 0,
      propagation: 0,
      data: "lowerdir=/a:/b,upperdir=/u,workdir=/w,index=off",
    });
    const o = parseMountOptions(["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"]);
    expect(o.flags).toBe(MS.BIND | MS.REC | MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC);
    expect(o.propagation).toBe(MS.PRIVATE | MS.REC);
    expect(o.data).toBe("");
    expect(parseMountOptions(["ro", "rw"]).flags).toBe(0); // later wins, like mount(8)
  });
});

const root = process.getuid?.() === 0;

test("prerequisites: root (mount needs it)", () => expect(root).toBe(true));
describe("mount/unmount (root)", () => {
  const base = mkdtempSync(join(tmpdir(), "bunwasi-rootfs-"));
  const bundle = join(base, "bundle");
  afterAll(() => {
    unmountRootfs(bundle);
    rmSync(base, { recursive: true, force: true });
  });
  for (const d of ["l1", "l2", "up", "wk", "src", "bundle"]) mkdirSync(join(base, d));
  writeFileSync(join(base, "l1", "a"), "a");
  writeFileSync(join(base, "l2", "b"), "b");
  writeFileSync(join(base, "src", "c"), "c");

  test("overlay, then unmount is idempotent", async () => {
    const r = await mountRootfsAsync(bundle, [
      {
        type: "overlay",
        source: "overlay",
        options: [`lowerdir=${base}/l1:${base}/l2`, `upperdir=${base}/up`, `workdir=${base}/wk`, "index=off"],
      },
    ]);
    expect(readdirSync(r).sort()).toEqual(["a", "b"]);
    writeFileSync(join(r, "new"), "x");
    expect(unmountRootfs(bundle)).toBe(1);
    expect(unmountRootfs(bundle)).toBe(0);
    expect(readdirSync(join(base, "up"))).toEqual(["new"]);
    expect(readdirSync(r)).toEqual([]);
  });

  test("read-only rbind", async () => {
    const r = await mountRootfsAsync(bundle, [{ type: "bind", source: join(base, "src"), options: ["rbind", "ro"] }]);
    expect(readdirSync(r)).toEqual(["c"]);
    expect(() => writeFileSync(join(r, "x"), "x")).toThrow(/read-only/);
    expect(unmountRootfs(bundle)).toBe(1);
  });

  test("unmounting a bundle that never existed is fine", () => {
    expect(unmountRootfs(join(base, "never"))).toBe(0);
  });
});
