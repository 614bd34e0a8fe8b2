// Gathers Stats' asks for a fresh memory figure into one epoch bump.
//
// A run publishes its linear memory at its epoch callback (./run-atomics.ts), so asking for a
// fresh figure means bumping the epoch. The epoch is the engine's: one bump sends every
// running module of the daemon through its callback, not only the asked one. containerd
// asks for the Stats of all of a node's tasks at once (its Metrics call, the kubelet's
// container stats), so one bump per ask would be one interruption of every run per
// container asked. Here the asks made until the bump goes out, on the next turn of the event
// loop, share it; an ask already answered by then (another bump came first: a kill, a
// pause) needs none, and when all are, no bump goes out.

export class MemoryAsks {
  private waiting: (() => boolean)[] = [];
  private sent: Promise<void> | null = null;

  /** `bump`: the engine-wide epoch increment. */
  constructor(private readonly bump: () => void) {}

  /**
   * Resolves once a bump has gone out after this call (or was not needed: `answered()` was
   * true by then). `answered` tells whether the asking run has published since it asked.
   */
  bumpSoon(answered: () => boolean): Promise<void> {
    this.waiting.push(answered);
    this.sent ??= new Promise<void>((resolve) =>
      setImmediate(() => {
        const asks = this.waiting;
        this.waiting = [];
        this.sent = null;
        if (asks.some((a) => !a())) this.bump();
        resolve();
      }),
    );
    return this.sent;
  }
}
