// JavaScriptCore options for our long-lived processes (the shim server and the executor),
// through the environment, the only way to set them before the VM starts (Bun reads
// BUN_JSC_<option>). Both run little JavaScript after start-up, so threads that compile
// and collect concurrently buy nothing and cost their stacks and per-thread heaps: measured
// with bench/shim/smaps.ts, a server went from 9 threads to 5 and about 0.35 MiB less PSS.
// Collections then run on the thread that allocates; with heaps of a few MiB they are short.

export const SMALL_VM_ENV: Readonly<Record<string, string>> = {
  BUN_JSC_useConcurrentJIT: "0",
  BUN_JSC_useConcurrentGC: "0",
  BUN_JSC_numberOfGCMarkers: "1",
  BUN_JSC_useWarmUpMarkedBlocks: "0",
  BUN_JSC_useBaselineJIT: "0",
};

/** Names of the SMALL_VM_ENV entries the executor added, so the module does not see them. */
export const ADDED_VM_ENV = "BUNWASI_VM_ENV";

/** `env` with SMALL_VM_ENV added where it sets nothing of its own. */
export function withSmallVm(env: Record<string, string | undefined>): Record<string, string | undefined> {
  return { ...SMALL_VM_ENV, ...env };
}

/** OCI `KEY=VALUE` entries with SMALL_VM_ENV added where unset, and ADDED_VM_ENV naming what was added. */
export function withSmallVmEntries(env: string[]): string[] {
  const set = new Set(env.map((e) => e.slice(0, Math.max(0, e.indexOf("=")))));
  const added = Object.keys(SMALL_VM_ENV).filter((k) => !set.has(k));
  if (!added.length) return env;
  return [...env, ...added.map((k) => `${k}=${SMALL_VM_ENV[k]}`), `${ADDED_VM_ENV}=${added.join(",")}`];
}
