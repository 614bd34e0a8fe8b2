// mountRootfsAsync (the Task service's path): directories made on the way, each
// target once the mounts before it are in place. Real mount(2), so root.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mountRootfsAsync, unmountAll, unmountRootfs } from "../../../src/oci/rootfs.ts";

test("prerequisites: root (mount needs it)", () => expect(process.getuid?.()).toBe(0));

describe("mountRootfsAsync (root)", () => {
  const base = mkdtempSync(join(tmpdir(), "bunwasi-rootfs-async-"));
  const bundle = join(base, "bundle");
  afterAll(() => {
    unmountAll(join(bundle, "rootfs", "data"));
    unmountRootfs(bundle);
    rmSync(base, { recursive: true, force: true });
  });
  for (const d of ["img", "vol", "bundle"]) mkdirSync(join(base, d));
  writeFileSync(join(base, "img", "app"), "app");
  writeFileSync(join(base, "vol", "v"), "v");

  test("a target inside an earlier mount is made in that mount, after it", async () => {
    const r = await mountRootfsAsync(bundle, [
      { type: "bind", source: join(base, "img"), options: ["rbind"] },
      { type: "bind", source: join(base, "vol"), target: "data", options: ["rbind", "ro"] },
    ]);
    expect(readdirSync(r).sort()).toEqual(["app", "data"]);
    expect(readdirSync(join(r, "data"))).toEqual(["v"]);
    // The mount point was made inside the image's mount, not under it.
    expect(existsSync(join(base, "img", "data"))).toBe(true);
    expect(unmountAll(join(r, "data"))).toBe(1);
    expect(unmountRootfs(bundle)).toBe(1);
  });

  test("a failing mount rejects, naming it, and leaves nothing mounted", async () => {
    const failed = mountRootfsAsync(bundle, [
      { type: "bind", source: join(base, "img"), options: ["rbind"] },
      { type: "overlay", source: "overlay", target: "sub", options: [`lowerdir=${base}/missing`] },
    ]);
    await expect(failed).rejects.toThrow(/overlay: mount\(overlay overlay on .*\/rootfs\/sub\): No such file or directory/);
    expect(unmountRootfs(bundle)).toBe(0);
  });
});
