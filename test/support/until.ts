// Waiting in e2e tests: poll `f` until it gives a truthy value. The timeout is liveness only
// (a test fails instead of hanging), never a bound on how fast anything must be.

/** What a truthy value of type T can be (`until` returns only those). */
type Truthy<T> = Exclude<T, false | 0 | "" | null | undefined>;

export async function until<T>(what: string, f: () => T | Promise<T>, timeoutMs = 30_000, stepMs = 25): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v as Truthy<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(stepMs);
  }
}
