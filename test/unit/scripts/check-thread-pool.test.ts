// scripts/check-thread-pool.ts: it finds each form of asynchronous file I/O and nothing else,
// follows what a shim server and an executor load (not the daemon's own modules), and holds
// for this repository with exactly the allowances it lists.
import { expect, test } from "bun:test";
import { ALLOWED, asyncFsUses, check, ENTRIES, graph } from "../../../scripts/check-thread-pool.ts";

test("every form of asynchronous file I/O is found", () => {
  const cases: [string, string[]][] = [
    ['import { readFile } from "node:fs/promises";\nawait readFile("/x");', ['import from "node:fs/promises"']],
    ['const { rm } = await import("node:fs/promises");\nawait rm("/x");', ['import("node:fs/promises")']],
    ['const fsp = require("fs/promises");\nfsp.rm("/x");', ['require("fs/promises")']],
    ['import { readFile, readFileSync } from "node:fs";\nreadFileSync("/x");\nreadFile("/x", () => {});', ["readFile"]],
    ['import { stat as st } from "fs";\nst("/x", () => {});', ["st (stat)"]],
    ['import * as fs from "node:fs";\nfs.readdirSync("/");\nfs.readdir("/", () => {});', ["fs.readdir"]],
    ['import fs from "node:fs";\nawait fs.promises.readFile("/x");', ["fs.promises"]],
    ['const { writeFile: wf, writeFileSync } = require("node:fs");\nwf("/x", "", () => {});', ["wf (writeFile)"]],
    ['const b = (require("node:fs") as typeof import("node:fs")).readFile;', ['require("node:fs").readFile']],
    ['await Bun.write("/x", "data");', ["Bun.write("]],
    ['const t = await Bun.file("/x").text();', ["Bun.file(…).text("]],
    ['const s = fs.createReadStream("/x");\nimport * as fs from "node:fs";', ["fs.createReadStream"]],
  ];
  for (const [source, uses] of cases) expect({ source, uses: asyncFsUses(source) }).toEqual({ source, uses });
});

test("synchronous calls, comments, strings, type-only imports and other modules' functions are not", () => {
  const source = `
    // node:fs/promises would start Bun's pool; so would fs.readFile( and Bun.write(
    /** readFile("/x") */
    import type { FileHandle } from "node:fs/promises";
    import { closeSync, existsSync, readFileSync, writeFileSync } from "node:fs";
    import { close } from "./libc.ts";
    const said = "import('node:fs/promises')";
    const h: FileHandle | undefined = undefined;
    close(3);
    writeFileSync("/x", readFileSync("/y"));
    if (existsSync("/x")) closeSync(4);
    const stream = Bun.file(0).stream();
    const readFile = () => 1;
  `;
  expect(asyncFsUses(source)).toEqual([]);
});

test("the graph is what a server and an executor load: a run thread's and the compiler's Worker scripts, not the daemon's modules", () => {
  const files = [...graph(ENTRIES).keys()].map((f) => f.slice(f.indexOf("/src/") + 1));
  for (const f of [
    "src/shim/serve.ts",
    "src/engines/executor.ts",
    "src/linux/exit-watcher.ts",
    "src/engines/wasmtime/worker.ts",
    "src/engines/wasmtime/compile-worker.ts",
  ])
    expect(files).toContain(f);
  expect(files.filter((f) => f.startsWith("src/daemon/") || f === "src/linux/proc-async.ts")).toEqual([]);
  // start and delete are short-lived processes of the command line, loaded by path.
  expect(files).not.toContain("src/shim/command-line.ts");
  expect(files).not.toContain("src/shim/start.ts");
});

test("the rule holds for this repository, and each allowance is used", () => {
  expect(check()).toEqual([]);
  // Without its allowances, exactly the allowed uses fail.
  const failing = check(ENTRIES, []);
  expect(failing.length).toBe(ALLOWED.length);
  for (const a of ALLOWED) expect(failing.some((f) => f.startsWith(`${a.file}:`) && f.includes(a.use))).toBe(true);
  // An allowance for more than is there fails too: it would hide the next use.
  expect(
    check(
      ENTRIES,
      ALLOWED.map((a) => ({ ...a, count: a.count + 1 })),
    ),
  ).toHaveLength(ALLOWED.length);
});
