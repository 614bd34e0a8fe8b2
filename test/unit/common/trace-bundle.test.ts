// Tracing off costs nothing: in the bundle of a shim server (what `bun build --compile` puts
// in the binary) the exporter's one built-in module, node:async_hooks, is not imported at the
// top, where it would load in every server whether or not tracing is on. A bundler hoists a
// static import of a built-in out of a module it inlines (src/common/otlp-traces.ts imports it
// inside its factory for that reason).
import { expect, test } from "bun:test";
import { join } from "node:path";

const REPO = join(import.meta.dir, "../../..");

test("a shim server's bundle loads node:async_hooks only from the exporter's factory", async () => {
  const out = await Bun.build({ entrypoints: [join(REPO, "src/shim/serve.ts")], target: "bun" });
  expect(out.success).toBe(true);
  const text = await (out.outputs[0] as Bun.BuildArtifact).text();
  // The exporter is in the bundle (a dynamic import of a file is inlined) ...
  expect(text).toContain("function otlpTracer(");
  // ... and async_hooks is imported nowhere but inside it, dynamically.
  expect(text).not.toMatch(/^import[^;]*from\s*"(node:)?async_hooks"/m);
  expect(text).not.toMatch(/require\("(node:)?async_hooks"\)/);
  expect(text.match(/import\("(node:)?async_hooks"\)/g)?.length).toBe(1);
});
