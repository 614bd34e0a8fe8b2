// The inbound half of a stream: messages pushed by the connection as frames arrive,
// pulled by one consumer with `for await`. Ends cleanly, or with an error.

export class MessageQueue<T> implements AsyncIterableIterator<T> {
  private items: T[] = [];
  private head = 0;
  private waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | null = null;
  private done = false;
  private error: unknown = undefined;

  /**
   * @param onReturn called once if the consumer stops early (break, throw).
   * @param onTake called for every item the consumer takes (for flow accounting).
   */
  constructor(
    private readonly onReturn?: () => void,
    private readonly onTake?: () => void,
  ) {}

  get size(): number {
    return this.items.length - this.head;
  }

  get ended(): boolean {
    return this.done;
  }

  push(item: T): void {
    if (this.done) return;
    const w = this.waiting;
    if (w !== null) {
      this.waiting = null;
      this.onTake?.();
      w.resolve({ value: item, done: false });
      return;
    }
    this.items.push(item);
  }

  end(): void {
    this.finish(undefined);
  }

  fail(error: unknown): void {
    this.finish(error ?? new Error("stream failed"));
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head++] as T;
      this.onTake?.();
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.done) {
      return this.error === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(this.error);
    }
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<T>> {
    if (!this.done) {
      this.finish(undefined);
      this.onReturn?.();
    }
    this.items = [];
    this.head = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private finish(error: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = error;
    const w = this.waiting;
    if (w === null) return;
    this.waiting = null;
    if (error === undefined) w.resolve({ value: undefined, done: true });
    else w.reject(error);
  }
}
