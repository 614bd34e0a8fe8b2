// src/oci/wasi-view.ts: the module's view of the container (RunPlan.view) made by mounts:
// as runc mounts it in normal mode (the derived spec's mounts), and as the shared-mode daemon
// mounts it itself (real mount(2): root) — nosuid and nodev, read-only where asked, volumes at
// their destination through symlinks resolved inside the container, all of it gone on unmount.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { WasiView } from "../../../src/engines/run-plan.ts";
import type { Spec, SpecMount } from "../../../src/oci/spec.ts";
import { mountView, unmountView, viewMountPoint, viewMounts, viewVolumes } from "../../../src/oci/wasi-view.ts";

const spec = (mounts: SpecMount[]): Spec => ({
  ociVersion: "1.0.2",
  process: { args: ["/app.wasm"], cwd: "/" },
  root: { path: "rootfs" },
  mounts,
});

test("viewVolumes: a recursive read-only mount (CRI's rro) is a read-only volume of the view, as ro is", () => {
  const dir = mkdtempSync(join(tmpdir(), "bw-rro-"));
  try {
    const bind = (destination: string, options: string[]): SpecMount => ({ destination, type: "bind", source: dir, options });
    const spec = {
      ociVersion: "1.0.2",
      mounts: [bind("/rro", ["rbind", "rprivate", "rro"]), bind("/ro", ["rbind", "ro"]), bind("/rw", ["rbind", "rw"])],
    } as Spec;
    expect(viewVolumes(spec).map((v) => [v.destination, v.readOnly])).toEqual([
      ["/rro", true],
      ["/ro", true],
      ["/rw", false],
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("normal mode: the spec mounts runc makes the view with", () => {
  const view: WasiView = {
    root: "/b/rootfs",
    readOnly: false,
    volumes: [
      { source: "/host/config", destination: "/config", readOnly: true },
      { source: "/host/data", destination: "/data", readOnly: false },
    ],
  };
  test("the rootfs bound once more, then each volume under it: non-recursive, nosuid, nodev", () => {
    expect(viewMounts(view, "/dev/.bunwasi-root")).toEqual([
      { destination: "/dev/.bunwasi-root", type: "bind", source: "/b/rootfs", options: ["bind", "rw", "nosuid", "nodev"] },
      { destination: "/dev/.bunwasi-root/config", type: "bind", source: "/host/config", options: ["bind", "ro", "nosuid", "nodev"] },
      { destination: "/dev/.bunwasi-root/data", type: "bind", source: "/host/data", options: ["bind", "rw", "nosuid", "nodev"] },
    ]);
  });

  test("a read-only root gives a read-only view (runc remounts only the container's own root)", () => {
    expect(viewMounts({ ...view, readOnly: true }, "/v")[0]?.options).toEqual(["bind", "ro", "nosuid", "nodev"]);
  });

  test("the mount point: in runc's /dev tmpfs, else at the top of the rootfs", () => {
    expect(viewMountPoint(spec([{ destination: "/dev", type: "tmpfs", source: "tmpfs" }]))).toBe("/dev/.bunwasi-root");
    expect(viewMountPoint(spec([]))).toBe("/.bunwasi-root");
  });
});

/** The mount points under `dir` in this process's mount namespace. */
function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
}

/** What `open(2)` of `path` for reading answers: "ok" or the error code. */
function openRead(path: string): string {
  try {
    readFileSync(path);
    return "ok";
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

function writeTo(path: string): string {
  try {
    writeFileSync(path, "x");
    return "ok";
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

describe("shared mode: the daemon mounts the view itself (root)", () => {
  test("prerequisites: root (mount needs it)", () => expect(process.getuid?.()).toBe(0));

  const base = mkdtempSync(join(tmpdir(), "bunwasi-view-"));
  const views: string[] = [];
  afterAll(() => {
    // Never a recursive removal through a view still mounted: it would reach the sources.
    for (const v of views) unmountView(v);
    rmSync(base, { recursive: true, force: true });
  });

  let n = 0;
  /** A rootfs with a file, a char device node (1:3, /dev/null's numbers) and symlinks; two volumes. */
  function fixture() {
    const d = join(base, `f${n++}`);
    const root = join(d, "rootfs");
    mkdirSync(join(root, "etc"), { recursive: true });
    writeFileSync(join(root, "etc/passwd"), "root:x:0:0\n");
    const mknod = Bun.spawnSync(["mknod", join(root, "null"), "c", "1", "3"]);
    if (mknod.exitCode !== 0) throw new Error(`mknod: ${mknod.stderr.toString()}`);
    symlinkSync("/srv/data", join(root, "data")); // a volume's destination through a symlink…
    symlinkSync("../../../../../../tmp", join(root, "escape")); // …and one pointing out of the rootfs
    const rw = join(d, "rw");
    const ro = join(d, "ro");
    mkdirSync(rw);
    mkdirSync(ro);
    writeFileSync(join(ro, "r"), "read me\n");
    const dev = Bun.spawnSync(["mknod", join(rw, "zero"), "c", "1", "5"]);
    if (dev.exitCode !== 0) throw new Error(`mknod: ${dev.stderr.toString()}`);
    const at = join(d, "work", "wasi-root");
    views.push(at);
    return { d, root, rw, ro, at };
  }

  test("the rootfs and the volumes at their destinations; device nodes refused (nodev); read-only where asked; all gone on unmount", () => {
    const f = fixture();
    const view: WasiView = {
      root: f.root,
      readOnly: false,
      volumes: [
        { source: f.rw, destination: "/data", readOnly: false },
        { source: f.ro, destination: "/data/config", readOnly: true },
        { source: f.ro, destination: "/escape/x", readOnly: true },
      ],
    };
    mountView(view, f.at);
    expect(readFileSync(join(f.at, "etc/passwd"), "utf8")).toBe("root:x:0:0\n");
    // A device node of the image and one of a volume: EACCES, as in normal mode.
    expect(openRead(join(f.at, "null"))).toBe("EACCES");
    // The symlinked destination /data → /srv/data was resolved inside the container.
    expect(openRead(join(f.at, "srv/data/zero"))).toBe("EACCES");
    expect(writeTo(join(f.at, "srv/data/new"))).toBe("ok");
    expect(readFileSync(join(f.rw, "new"), "utf8")).toBe("x");
    // A volume inside a volume: its mount point made in the outer one.
    expect(readFileSync(join(f.at, "srv/data/config/r"), "utf8")).toBe("read me\n");
    expect(writeTo(join(f.at, "srv/data/config/w"))).toBe("EROFS");
    // A symlink pointing out of the rootfs led the mount point to the rootfs's own /tmp, not the host's.
    expect(existsSync(join(f.root, "tmp/x"))).toBe(true);
    expect(readdirSync(join(f.at, "tmp/x"))).toEqual(["r"]);
    // The root is writable, without setuid or devices.
    expect(writeTo(join(f.at, "etc/new"))).toBe("ok");
    expect(mountsUnder(f.at).length).toBe(4);
    unmountView(f.at);
    expect(mountsUnder(f.at)).toEqual([]);
    // Idempotent: nothing mounted is fine.
    unmountView(f.at);
    // The sources are untouched by the view going.
    expect(readdirSync(f.ro)).toEqual(["r"]);
  });

  test("a read-only root: writes fail with EROFS, the volumes keep their own flags", () => {
    const f = fixture();
    mountView({ root: f.root, readOnly: true, volumes: [{ source: f.rw, destination: "/out", readOnly: false }] }, f.at);
    expect(writeTo(join(f.at, "etc/new"))).toBe("EROFS");
    expect(writeTo(join(f.at, "out/new"))).toBe("ok");
    unmountView(f.at);
    expect(mountsUnder(f.at)).toEqual([]);
  });

  test("a mount point that cannot be made fails the mount, saying which volume, and leaves nothing mounted", () => {
    const f = fixture();
    // /etc/passwd is a file: no directory can be made there.
    expect(() =>
      mountView({ root: f.root, readOnly: false, volumes: [{ source: f.rw, destination: "/etc/passwd/x", readOnly: false }] }, f.at),
    ).toThrow("volume /etc/passwd/x: cannot make its mount point in the container's rootfs: /etc/passwd/x: /etc/passwd is not a directory");
    expect(mountsUnder(f.at)).toEqual([]);
    // Inside another volume (made through the view, after the root is mounted): undone too.
    writeFileSync(join(f.rw, "file"), "");
    expect(() =>
      mountView(
        {
          root: f.root,
          readOnly: false,
          volumes: [
            { source: f.rw, destination: "/v", readOnly: false },
            { source: f.ro, destination: "/v/file/x", readOnly: false },
          ],
        },
        f.at,
      ),
    ).toThrow("volume /v/file/x: cannot make its mount point: /v/file/x: /v/file is not a directory");
    expect(mountsUnder(f.at)).toEqual([]);
  });
});
