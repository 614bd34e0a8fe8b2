// Shared setup for the engine tests: build libwasmtime + the test modules (idempotent) and
// fail loudly if either is missing.
import { existsSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { RunPlan } from "../../../src/engines/run-plan.ts";
import { tempDir } from "../../support/temp-dirs.ts";

export const REPO = resolve(import.meta.dir, "..", "..", "..");
export const WASM_DIR = join(REPO, "build", "wasm");

function sh(script: string, args: string[] = []): string {
  const r = Bun.spawnSync(["bash", join(REPO, "scripts", script), ...args], { stderr: "pipe", stdout: "pipe" });
  if (r.exitCode !== 0) {
    throw new Error(`scripts/${script} failed (exit ${r.exitCode}):\n${r.stderr.toString()}`);
  }
  return r.stdout.toString().trim();
}

let prepared: { libPath: string } | undefined;

/** Ensure libwasmtime and build/wasm/*.wasm exist; returns the library path. */
export function prepare(): { libPath: string } {
  if (prepared) return prepared;
  const libPath = sh("libwasmtime.sh").split("\n").pop() ?? "";
  if (!existsSync(libPath)) throw new Error(`libwasmtime not available at "${libPath}"`);
  sh("build-wasm.sh", [WASM_DIR]);
  for (const m of ["wasi-demo-app", "busy", "trap", "env", "cat", "bigout", "escape", "funcs", "grow"]) {
    if (!existsSync(wasm(m))) throw new Error(`test module ${wasm(m)} was not built`);
  }
  prepared = { libPath };
  return prepared;
}

export function wasm(name: string): string {
  return join(WASM_DIR, `${name}.wasm`);
}

/** A directory for one test, removed after the run (test/support/temp-dirs.ts). */
export function tmp(prefix = "bunwasi-eng-"): string {
  return tempDir(prefix);
}

let componentsBuilt = false;

/** Ensure build/wasm/components/*.wasm exist (scripts/build-components.sh, idempotent). */
export function prepareComponents(): void {
  if (componentsBuilt) return;
  sh("build-components.sh", [WASM_DIR]);
  for (const c of ["wasi-demo-app", "env", "cat", "escape", "busy", "trap", "exit-code", "funcs", "grow", "missing-import"]) {
    if (!existsSync(component(c))) throw new Error(`test component ${component(c)} was not built`);
  }
  componentsBuilt = true;
}

/** A test component built from test/wasm (C through the preview 1 adapter, or test/wasm/components/*.wat). */
export function component(name: string): string {
  return join(WASM_DIR, "components", `${name}.wasm`);
}

/**
 * Writes a RunPlan for `module` (a host path: the executor runs on the host here) into `dir`
 * and returns the file, for `executor --plan`. `over` replaces fields of the plan.
 */
export function writePlan(dir: string, module: string, over: Partial<RunPlan> = {}): string {
  const plan: RunPlan = {
    module: { host: module, path: module },
    args: [module],
    env: [],
    cwd: "/",
    limits: {},
    view: { root: "/", readOnly: false, volumes: [] },
    user: { uid: 0, gid: 0, additionalGids: [] },
    ...over,
  };
  const file = join(dir, `plan-${++plans}.json`);
  writeFileSync(file, JSON.stringify(plan));
  return file;
}
let plans = 0;
