// The tar writer against GNU tar and Bun.Archive, and our reader against both.
import { afterAll, describe, expect, test } from "bun:test";
import { lstatSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readTar, type TarEntry, writeTar } from "../../../tools/image/tar.ts";
import { tempDir } from "../../support/tmp.ts";

const tmp = tempDir("bunwasi-tar-");
afterAll(() => tmp.cleanup());

const enc = new TextEncoder();
const longDir = `${"d".repeat(60)}/${"e".repeat(60)}`; // 121 bytes: needs the ustar prefix
const longName = `${"x".repeat(90)}/${"y".repeat(90)}/${"z".repeat(90)}.txt`; // > 256: needs PAX
const longTarget = `../${"t".repeat(150)}`; // > 100: PAX linkpath

const entries: TarEntry[] = [
  { type: "dir", path: "bin", mode: 0o755 },
  { type: "file", path: "bin/tool", data: enc.encode("#!/bin/sh\necho hi\n"), mode: 0o755 },
  { type: "symlink", path: "bin/sh", target: "tool" },
  { type: "file", path: "/etc/hello.txt", data: enc.encode("hello\n"), mode: 0o640, mtime: 1_700_000_000 },
  { type: "dir", path: "tmp", mode: 0o1777 },
  { type: "file", path: "empty", data: new Uint8Array(0) },
  { type: "file", path: "block", data: new Uint8Array(512).fill(7) },
  { type: "file", path: `${longDir}/file.bin`, data: new Uint8Array([0, 1, 2, 255]) },
  { type: "file", path: longName, data: enc.encode("deep\n") },
  { type: "symlink", path: "far", target: longTarget },
  { type: "file", path: "ünïcödé.txt", data: enc.encode("utf8\n") },
];
const archive = writeTar(entries);
const archivePath = join(tmp.path, "t.tar");
writeFileSync(archivePath, archive);

function gnuTar(...args: string[]): string {
  const r = Bun.spawnSync(["tar", ...args], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`tar ${args.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

describe("writeTar", () => {
  test("is whole 512-byte blocks ending in two zero blocks", () => {
    expect(archive.length % 512).toBe(0);
    expect(archive.subarray(archive.length - 1024).every((b) => b === 0)).toBe(true);
  });

  test("GNU tar lists every entry with its type, mode, owner and link target", () => {
    const lines = gnuTar("--numeric-owner", "-tvf", archivePath).trim().split("\n");
    const byName = new Map(lines.map((l) => [l.split(/\s+/).slice(5).join(" "), l]));
    expect(lines.length).toBe(entries.length); // writeTar adds no implicit parents (layers do)
    expect(byName.get("bin/")).toMatch(/^drwxr-xr-x 0\/0 /);
    expect(byName.get("bin/tool")).toMatch(/^-rwxr-xr-x 0\/0 +18 /);
    expect(byName.get("bin/sh -> tool")).toMatch(/^lrwxrwxrwx /);
    expect(byName.get("etc/hello.txt")).toMatch(/^-rw-r----- 0\/0 +6 2023-11-14/);
    expect(byName.get("tmp/")).toMatch(/^drwxrwxrwt /);
    expect(byName.get(`${longDir}/file.bin`)).toMatch(/^-rw-r--r-- 0\/0 +4 /);
    expect(byName.get(longName)).toBeDefined();
    expect(byName.get(`far -> ${longTarget}`)).toBeDefined();
    expect(byName.get("ünïcödé.txt")).toBeDefined();
  });

  test("GNU tar extracts the same bytes, modes and symlinks", () => {
    const out = join(tmp.path, "x");
    mkdirSync(out);
    gnuTar("-xpf", archivePath, "-C", out);
    expect(readFileSync(join(out, "bin/tool"), "utf8")).toBe("#!/bin/sh\necho hi\n");
    expect(lstatSync(join(out, "bin/tool")).mode & 0o7777).toBe(0o755);
    expect(readlinkSync(join(out, "bin/sh"))).toBe("tool");
    expect(readlinkSync(join(out, "far"))).toBe(longTarget);
    expect(lstatSync(join(out, "tmp")).mode & 0o7777).toBe(0o1777);
    expect(lstatSync(join(out, "etc/hello.txt")).mtimeMs).toBe(1_700_000_000_000);
    expect([...readFileSync(join(out, longDir, "file.bin"))]).toEqual([0, 1, 2, 255]);
    expect(readFileSync(join(out, longName), "utf8")).toBe("deep\n");
    expect(readFileSync(join(out, "block"))).toEqual(Buffer.alloc(512, 7));
    expect(readFileSync(join(out, "empty")).length).toBe(0);
  });

  test("device nodes: GNU tar lists their numbers and makes them (as root)", () => {
    const devPath = join(tmp.path, "dev.tar");
    writeFileSync(
      devPath,
      writeTar([
        { type: "chardev", path: "null", major: 1, minor: 3, mode: 0o666 },
        { type: "blockdev", path: "loop", major: 7, minor: 0, mode: 0o660 },
      ]),
    );
    const lines = gnuTar("--numeric-owner", "-tvf", devPath).trim().split("\n");
    expect(lines[0]).toMatch(/^crw-rw-rw- 0\/0 +1,3 .* null$/);
    expect(lines[1]).toMatch(/^brw-rw---- 0\/0 +7,0 .* loop$/);
    const out = join(tmp.path, "devx");
    mkdirSync(out);
    gnuTar("-xpf", devPath, "-C", out);
    const st = lstatSync(join(out, "null"));
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.rdev).toBe((1 << 8) | 3);
  });

  test("Bun.Archive reads the same files", async () => {
    const files = await new Bun.Archive(archive as Uint8Array<ArrayBuffer>).files();
    expect(await files.get("bin/tool")?.text()).toBe("#!/bin/sh\necho hi\n");
    expect(await files.get("etc/hello.txt")?.text()).toBe("hello\n");
    expect(await files.get(longName)?.text()).toBe("deep\n");
    expect(new Uint8Array(await files.get(`${longDir}/file.bin`)!.arrayBuffer())).toEqual(new Uint8Array([0, 1, 2, 255]));
    expect(await files.get("ünïcödé.txt")?.text()).toBe("utf8\n");
  });

  test("Bun.Archive gzip round trip keeps the content", async () => {
    const gz = Bun.gzipSync(archive as Uint8Array<ArrayBuffer>);
    const files = await new Bun.Archive(gz).files();
    expect(await files.get("bin/tool")?.text()).toBe("#!/bin/sh\necho hi\n");
  });

  test("refuses paths that escape and empty paths", () => {
    expect(() => writeTar([{ type: "file", path: "../x", data: new Uint8Array() }])).toThrow();
    expect(() => writeTar([{ type: "file", path: "/", data: new Uint8Array() }])).toThrow();
  });

  test("same input, same bytes", () => {
    expect(Bun.hash(writeTar(entries))).toBe(Bun.hash(archive));
  });
});

describe("readTar", () => {
  test("round-trips what writeTar wrote", () => {
    const back = readTar(archive);
    expect(back.map((e) => e.path)).toEqual([
      "bin/",
      "bin/tool",
      "bin/sh",
      "etc/hello.txt",
      "tmp/",
      "empty",
      "block",
      `${longDir}/file.bin`,
      longName,
      "far",
      "ünïcödé.txt",
    ]);
    const tool = back[1];
    expect(tool?.type === "file" && new TextDecoder().decode(tool.data)).toBe("#!/bin/sh\necho hi\n");
    expect(tool?.mode).toBe(0o755);
    expect(back[2]).toMatchObject({ type: "symlink", target: "tool" });
    expect(back[9]).toMatchObject({ type: "symlink", target: longTarget });
    expect(back[3]?.mtime).toBe(1_700_000_000);
  });

  test("reads archives GNU tar wrote (GNU long names included)", () => {
    const src = join(tmp.path, "src");
    const deep = `${"a".repeat(60)}/${"b".repeat(60)}`; // 121 bytes: GNU 'L', PAX path, ustar prefix
    mkdirSync(join(src, deep), { recursive: true });
    writeFileSync(join(src, deep, "f"), "gnu\n");
    const out = join(tmp.path, "gnu.tar");
    for (const format of ["gnu", "pax", "ustar"]) {
      gnuTar(`--format=${format}`, "-cf", out, "-C", src, ".");
      const back = readTar(new Uint8Array(readFileSync(out)));
      const f = back.find((e) => e.path.endsWith("/f"));
      expect(f?.path).toBe(`./${deep}/f`);
      expect(f?.type === "file" && new TextDecoder().decode(f.data)).toBe("gnu\n");
    }
  });

  test("rejects a corrupted header", () => {
    const bad = archive.slice();
    bad[0] = (bad[0] ?? 0) ^ 0xff;
    expect(() => readTar(bad)).toThrow(/checksum/);
  });
});
