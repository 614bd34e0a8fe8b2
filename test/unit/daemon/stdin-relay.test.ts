// The stdin relay (src/daemon/stdin-relay.ts) on real fifos: the write end it opens on the
// module's fifo is non-blocking, so a module that does not read holds up nothing but its own
// input (the daemon's event loop keeps turning: a blocking write would stall every pod), and
// what containerd wrote meanwhile arrives whole and in order once the module reads.
import { afterEach, expect, test } from "bun:test";
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeStdinFifo, StdinRelay } from "../../../src/daemon/stdin-relay.ts";
import { fdsOn, stdinFifo } from "../../support/fifos.ts";

const O_ACCMODE = 3;
let dir = "";
const opened: number[] = [];
afterEach(() => {
  for (const fd of opened.splice(0)) {
    try {
      closeSync(fd);
    } catch {}
  }
  rmSync(dir, { recursive: true, force: true });
});

function open(path: string, flags: number): number {
  const fd = openSync(path, flags);
  opened.push(fd);
  return fd;
}

const isAgain = (e: unknown) => (e as NodeJS.ErrnoException).code === "EAGAIN";

test("a module that does not read: the relay's write end is non-blocking, the loop turns, and nothing is lost", async () => {
  dir = mkdtempSync(join(tmpdir(), "stdin-relay-"));
  // containerd's stdin fifo: our read end as the daemon opens it, and containerd's writer.
  const { reader: source, writer: containerd } = stdinFifo(join(dir, "in"));
  opened.push(source, containerd);
  const fifo = join(dir, "stdin");
  await makeStdinFifo(fifo);
  const relay = new StdinRelay(source, fifo);
  let endRun = () => {};
  const over = relay.run(new Promise<void>((r) => (endRun = r)));
  // The module's end of its stdin, opened but not read from yet.
  const module = open(fifo, constants.O_RDONLY | constants.O_NONBLOCK);

  const input = Buffer.alloc(1 << 20);
  for (let i = 0; i < input.length; i++) input[i] = (i * 13 + (i >> 10)) & 0xff;
  let written = 0;
  let stalled = false;
  const writing = (async () => {
    while (written < input.length) {
      try {
        written += writeSync(containerd, input, written, Math.min(65536, input.length - written));
      } catch (e) {
        if (!isAgain(e)) throw e;
        if (written > 128 * 1024) stalled = true; // both fifos are full: the relay waits on the module
        await Bun.sleep(1); // only returns if nothing holds this thread (a blocking write would)
      }
    }
    closeSync(containerd);
    opened.splice(opened.indexOf(containerd), 1);
  })();
  // Bounded looks (a hang fails here): the relay is stalled on the module, not the loop.
  for (let i = 0; i < 6000 && !stalled; i++) await Bun.sleep(10);
  expect(stalled).toBe(true);
  const relayEnds = fdsOn(fifo).filter((f) => f.fd !== module && (f.flags & O_ACCMODE) === constants.O_WRONLY);
  expect(relayEnds.length).toBe(1);
  expect(relayEnds[0]!.flags & constants.O_NONBLOCK).toBe(constants.O_NONBLOCK);

  // The module reads now: everything containerd wrote, in order, then EOF.
  const got = Buffer.alloc(input.length + 1);
  let n = 0;
  for (let looks = 0; looks < 60_000; looks++) {
    let r: number;
    try {
      r = readSync(module, got, n, got.length - n, null);
    } catch (e) {
      if (!isAgain(e)) throw e;
      await Bun.sleep(1);
      continue;
    }
    if (r === 0) break; // EOF: containerd's side closed and the relay ended the fifo
    n += r;
  }
  await writing;
  expect(n).toBe(input.length);
  expect(got.subarray(0, n).equals(input)).toBe(true);
  endRun();
  await over;
  expect(fdsOn(fifo).filter((f) => f.fd !== module)).toEqual([]);
});

test("a reader that looks again only when told (a run pool's): large writes arrive whole, told piece by piece, then EOF", async () => {
  dir = mkdtempSync(join(tmpdir(), "stdin-relay-"));
  // The source: a regular file, so that the relay reads more at once than a fifo holds (as a
  // stream of containerd's fifo may deliver when it reads several times before it hands over).
  const input = Buffer.alloc(1 << 20);
  for (let i = 0; i < input.length; i++) input[i] = (i * 7 + (i >> 12)) & 0xff;
  const inPath = join(dir, "in");
  writeFileSync(inPath, input);
  const source = open(inPath, constants.O_RDONLY);
  const fifo = join(dir, "stdin");
  await makeStdinFifo(fifo);
  const relay = new StdinRelay(source, fifo);
  let told: () => void = () => {};
  let ended = false;
  relay.watch((end) => {
    ended ||= end;
    told();
  });
  let endRun = () => {};
  const over = relay.run(new Promise<void>((r) => (endRun = r)));
  const module = open(fifo, constants.O_RDONLY | constants.O_NONBLOCK);

  // The reader: everything there is, then it waits for news (never looks on its own). Once
  // told the input ended, an empty fifo is the end, as a pool's read takes it.
  const got = Buffer.alloc(input.length + 1);
  let n = 0;
  for (;;) {
    const news = new Promise<void>((r) => (told = r));
    const endedBefore = ended;
    let empty = false;
    for (;;) {
      try {
        const r = readSync(module, got, n, got.length - n, null);
        n += r;
        // No writer: not yet (the relay opens its end once the module holds its own) or no more.
        empty ||= r === 0;
        if (r === 0) break;
      } catch (e) {
        if (!isAgain(e)) throw e;
        empty = true;
        break;
      }
    }
    if (endedBefore && empty) break;
    // Liveness only: without news the reader would wait for ever (the bug this checks).
    const timedOut = await Promise.race([news.then(() => false), Bun.sleep(30_000).then(() => true)]);
    if (timedOut) throw new Error(`no news after ${n} of ${input.length} bytes`);
  }
  expect(n).toBe(input.length);
  expect(got.subarray(0, n).equals(input)).toBe(true);
  endRun();
  await over;
}, 120_000);
