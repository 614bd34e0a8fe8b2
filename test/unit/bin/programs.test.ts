// The one binary's dispatch (src/bin/programs.ts): the name it is started as picks the
// program, else its first argument; -h and -v under its own name; the lists of names the
// build and install scripts keep agree with it.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { chooseProgram, MULTI_CALL_NAME, PROGRAMS } from "../../../src/bin/programs.ts";
import { SHIM_VERSION } from "../../../src/common/constants.ts";

const REPO = join(import.meta.dir, "../../..");
const NAMES = ["containerd-shim-wasmtime-v1", "containerd-shim-wasmtimed-v1", "containerd-wasmtimed"];

test("the programs are our three product names, each with its own entry file", () => {
  expect(Object.keys(PROGRAMS).sort()).toEqual([...NAMES].sort());
  for (const [name, p] of Object.entries(PROGRAMS)) expect(Bun.fileURLToPath(p.entry)).toBe(join(REPO, "src/bin", `${name}.ts`));
});

test("started under a program's name (a path or not), that program gets every argument", () => {
  for (const name of NAMES) {
    for (const argv0 of [name, `/usr/local/bin/${name}`, `./${name}`, `/.bunwasi/${name}`]) {
      expect(chooseProgram(argv0, ["-v"])).toEqual({ program: name, args: ["-v"] });
      // Its own -h, and an argument that is another program's name, are the program's.
      expect(chooseProgram(argv0, ["-h"])).toEqual({ program: name, args: ["-h"] });
      expect(chooseProgram(argv0, ["containerd-wasmtimed"])).toEqual({ program: name, args: ["containerd-wasmtimed"] });
    }
  }
  expect(chooseProgram("/x/containerd-shim-wasmtime-v1", [])).toEqual({ program: "containerd-shim-wasmtime-v1", args: [] });
});

test("under its own name (or any other) the first argument names the program", () => {
  for (const argv0 of [MULTI_CALL_NAME, `/usr/local/lib/bunwasi/0.1.0-abc/bin/${MULTI_CALL_NAME}`, "renamed"]) {
    expect(chooseProgram(argv0, ["containerd-shim-wasmtime-v1", "executor", "--plan", "p"])).toEqual({
      program: "containerd-shim-wasmtime-v1",
      args: ["executor", "--plan", "p"],
    });
    expect(chooseProgram(argv0, ["containerd-wasmtimed", "--help"])).toEqual({ program: "containerd-wasmtimed", args: ["--help"] });
  }
});

test("-h in every spelling prints the list of programs on stdout (status 0); -v the version", () => {
  for (const h of ["-h", "-help", "--help", "help"]) {
    const c = chooseProgram(`/bin/${MULTI_CALL_NAME}`, [h]);
    expect(c).toMatchObject({ exit: 0 });
    const out = (c as { stdout: string }).stdout;
    expect(out).toStartWith(`usage: ${MULTI_CALL_NAME} PROGRAM [ARGUMENTS…]`);
    for (const name of NAMES) expect(out).toContain(`\n  ${name} `);
    expect(c).not.toHaveProperty("stderr");
  }
  for (const v of ["-v", "-version", "--version"])
    expect(chooseProgram(MULTI_CALL_NAME, [v])).toEqual({ exit: 0, stdout: `${MULTI_CALL_NAME} (${SHIM_VERSION})\n` });
});

test("no program, or an unknown one, is refused with the usage on stderr (status 2); a wrong link name is said", () => {
  const none = chooseProgram(MULTI_CALL_NAME, []) as { exit: number; stderr: string };
  expect(none.exit).toBe(2);
  expect(none.stderr).toStartWith(`${MULTI_CALL_NAME}: no program given\nusage: ${MULTI_CALL_NAME} PROGRAM`);
  const bad = chooseProgram(MULTI_CALL_NAME, ["containerd-shim-nope-v1", "start"]) as { exit: number; stderr: string };
  expect(bad.exit).toBe(2);
  expect(bad.stderr).toStartWith(`${MULTI_CALL_NAME}: no program named containerd-shim-nope-v1\n`);
  const misnamed = chooseProgram("/usr/bin/containerd-shim-nope-v1", ["-namespace", "k8s.io", "start"]) as { exit: number; stderr: string };
  expect(misnamed.exit).toBe(2);
  expect(misnamed.stderr).toStartWith(
    "containerd-shim-nope-v1: no program named -namespace (this is bunwasi, started as containerd-shim-nope-v1, which is none of its programs)\n",
  );
});

test("every program's entry exports main(argv), and importing it runs nothing", async () => {
  for (const p of Object.values(PROGRAMS)) {
    const m = (await import(p.entry.href)) as { main?: unknown };
    expect(typeof m.main).toBe("function");
  }
});

test("scripts/build-shim.sh and scripts/install.sh name the same programs and the same binary", () => {
  const words = (file: string, array: string) => {
    const m = new RegExp(`^${array}=\\(([^)]*)\\)`, "m").exec(readFileSync(join(REPO, file), "utf8"));
    if (!m) throw new Error(`${file}: no ${array}=(…)`);
    return (m[1] as string).split(/\s+/).filter(Boolean);
  };
  expect(words("scripts/build-shim.sh", "PROGRAMS").sort()).toEqual([...NAMES].sort());
  expect(words("scripts/install.sh", "PROGRAMS").sort()).toEqual([...NAMES].sort());
  expect(readFileSync(join(REPO, "scripts/build-shim.sh"), "utf8")).toContain(`\nONE=${MULTI_CALL_NAME}\n`);
  expect(readFileSync(join(REPO, "scripts/install.sh"), "utf8")).toContain(`\nONE=${MULTI_CALL_NAME}\n`);
});
