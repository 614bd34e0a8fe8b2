// -info's features cache: one `<runtime> features` per binary, asked again when the binary
// changes, and never trusted when the file is not an answer.
import { afterAll, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ociRuntimeFeatures } from "../../../src/runtime-v2/info.ts";

const dir = mkdtempSync("/tmp/bw-info-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const calls = join(dir, "calls");
const runtime = join(dir, "fake-runc");
const cache = join(dir, "features");
const write = (mountOptions: string[]) => {
  writeFileSync(runtime, `#!/bin/sh\necho "$1" >> ${calls}\necho '${JSON.stringify({ ociVersionMin: "1.0.0", mountOptions })}'\n`);
  chmodSync(runtime, 0o755);
};
const asked = () => readFileSync(calls, "utf8").trim().split("\n").length;

test("the runtime is asked once while the binary stays the same", () => {
  write(["ro"]);
  expect(ociRuntimeFeatures(runtime, cache)?.mountOptions).toEqual(["ro"]);
  expect(ociRuntimeFeatures(runtime, cache)?.mountOptions).toEqual(["ro"]);
  expect(asked()).toBe(1);
  expect(readFileSync(calls, "utf8").trim()).toBe("features");
});

test("a binary changed in place is asked again", () => {
  write(["ro", "rro"]);
  utimesSync(runtime, new Date(), new Date(Date.now() + 5000));
  expect(ociRuntimeFeatures(runtime, cache)?.mountOptions).toEqual(["ro", "rro"]);
  expect(asked()).toBe(2);
});

test("a cache file that is not an answer is replaced, not believed", () => {
  for (const f of readdirSync(cache)) writeFileSync(join(cache, f), "[1,2]");
  expect(ociRuntimeFeatures(runtime, cache)?.mountOptions).toEqual(["ro", "rro"]);
  expect(asked()).toBe(3);
  expect(ociRuntimeFeatures(runtime, cache)?.mountOptions).toEqual(["ro", "rro"]);
  expect(asked()).toBe(3);
});

test("without a cache directory every call asks", () => {
  ociRuntimeFeatures(runtime);
  expect(asked()).toBe(4);
});

test("a runtime without `features` is remembered as having none", () => {
  const none = join(dir, "old-runc");
  writeFileSync(none, `#!/bin/sh\necho "$1" >> ${calls}\nexit 1\n`);
  chmodSync(none, 0o755);
  expect(ociRuntimeFeatures(none, cache)).toBeNull();
  expect(ociRuntimeFeatures(none, cache)).toBeNull();
  expect(asked()).toBe(5);
});
