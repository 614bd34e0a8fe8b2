// src/linux/reexec.ts: which settings a re-executed process would add. The re-execution
// itself is the daemon's (test/e2e/shared-run.test.ts checks its pid and environment).
import { expect, test } from "bun:test";
import { missingEnv, reexecWithEnv } from "../../../src/linux/reexec.ts";

test("only the keys the environment does not set are added; an operator's own value stays", () => {
  expect(missingEnv({ A: "0", B: "0" }, { A: "5", PATH: "/bin" })).toEqual({ B: "0" });
  expect(missingEnv({ A: "0" }, { A: "" })).toEqual({});
});

test("with every key already set there is nothing to do: no exec, and 0", () => {
  expect(reexecWithEnv({ PATH: "x" })).toBe(0);
});
