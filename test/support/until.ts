// Waiting in e2e tests: poll `f` until it gives a truthy value. The timeout is liveness only
// (a test fails instead of hanging), never a bound on how fast anything must be.

export async function until<T>(what: string, f: () => T | Promise<T>, timeoutMs = 30_000, stepMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(stepMs);
  }
}
