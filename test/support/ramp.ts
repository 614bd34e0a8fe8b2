// Many ctr calls at once, as the density suite (test/e2e/shared-density.test.ts) and the
// density benchmark (bench/shared/density.ts) make them: a bounded number in flight, and ids
// in groups per call (ctr's own start would otherwise be most of the work of a delete).

/** Runs fn over items, at most `width` at a time, in order of items. */
export async function pool<T>(items: T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

/** xs in consecutive groups of `size` (the last may be shorter). */
export const chunks = <T>(xs: T[], size: number): T[][] =>
  Array.from({ length: Math.ceil(xs.length / size) }, (_, i) => xs.slice(i * size, (i + 1) * size));
