import { beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { prepare, wasm } from "./helpers.ts";

let libPath: string;
beforeAll(() => {
  libPath = prepare().libPath;
});

async function startAndSignal(module: string, args: string[], sig: NodeJS.Signals) {
  const p = Bun.spawn([process.execPath, join(import.meta.dir, "fixtures", "run-module.ts"), libPath, wasm(module), ...args], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const reader = p.stderr.getReader();
  let seen = "";
  while (!seen.includes("started")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`fixture ended early: ${seen}`);
    seen += new TextDecoder().decode(value);
  }
  const t0 = performance.now();
  p.kill(sig);
  const code = await p.exited;
  return { code, ms: performance.now() - t0 };
}

test("SIGTERM to a process running a compute-only module: stops within 1 s with 143", async () => {
  const { code, ms } = await startAndSignal("busy", [], "SIGTERM");
  expect(code).toBe(143);
  expect(ms).toBeLessThan(1000);
});

test("SIGINT to a process running the daemon demo: 130", async () => {
  const { code, ms } = await startAndSignal("wasi-demo-app", ["daemon"], "SIGINT");
  expect(code).toBe(130);
  expect(ms).toBeLessThan(2000);
});
