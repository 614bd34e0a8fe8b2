// The poll thread of ExitWatcher (reaper.ts). It owns no state of its own: the set of pidfds
// to watch lives in a SharedArrayBuffer written by the main thread under a seqlock, and the main
// thread writes the wake eventfd whenever the set changes (or to stop us). The thread blocks in
// poll(2) over the eventfd plus every pidfd not yet reported, and posts the ids of the entries
// whose pidfd became readable (the process exited). It never waits for or reaps anything: the
// main thread collects the status with waitid(P_PIDFD).
//
// Shared layout (Int32Array): see CTL_* in reaper.ts (duplicated here to keep this file free of
// imports other than libc.ts).

import { eventfdDrain, POLLFD_SIZE, POLLIN, poll } from "./libc.ts";

const CTL_SEQ = 0;
const CTL_STOP = 1;
const CTL_COUNT = 2;
const CTL_EVENTFD = 3;
const CTL_HEADER = 4;

declare const self: Worker;

interface Init {
  ctl: SharedArrayBuffer;
  /** poll timeout while pidfds are watched (safety net; the eventfd is the real wake-up). */
  timeoutMs: number;
}

function snapshot(ctl: Int32Array): Array<[number, number]> {
  for (;;) {
    const s1 = Atomics.load(ctl, CTL_SEQ);
    if (s1 & 1) continue; // writer in progress
    const n = Atomics.load(ctl, CTL_COUNT);
    const out: Array<[number, number]> = [];
    for (let i = 0; i < n; i++) out.push([Atomics.load(ctl, CTL_HEADER + 2 * i), Atomics.load(ctl, CTL_HEADER + 2 * i + 1)]);
    if (Atomics.load(ctl, CTL_SEQ) === s1) return out;
  }
}

function run(init: Init): void {
  const ctl = new Int32Array(init.ctl);
  const efd = Atomics.load(ctl, CTL_EVENTFD);
  const reported = new Set<number>();
  let buf = new Uint8Array(POLLFD_SIZE * 64);
  let view = new DataView(buf.buffer);
  let lastSeq = -1;
  let entries: Array<[number, number]> = [];

  while (Atomics.load(ctl, CTL_STOP) === 0) {
    const seq = Atomics.load(ctl, CTL_SEQ);
    if (seq !== lastSeq) {
      entries = snapshot(ctl);
      lastSeq = seq;
      const live = new Set(entries.map((e) => e[1]));
      for (const id of reported) if (!live.has(id)) reported.delete(id);
    }
    const polled = entries.filter((e) => !reported.has(e[1]));
    const n = polled.length + 1;
    if (buf.byteLength < n * POLLFD_SIZE) {
      buf = new Uint8Array(n * POLLFD_SIZE * 2);
      view = new DataView(buf.buffer);
    }
    buf.fill(0, 0, n * POLLFD_SIZE);
    view.setInt32(0, efd, true);
    view.setInt16(4, POLLIN, true);
    for (let i = 0; i < polled.length; i++) {
      view.setInt32((i + 1) * POLLFD_SIZE, (polled[i] as [number, number])[0], true);
      view.setInt16((i + 1) * POLLFD_SIZE + 4, POLLIN, true);
    }
    const [r] = poll(buf, n, polled.length ? init.timeoutMs : -1);
    if (r <= 0) continue; // timeout or EINTR: re-read the set
    if (view.getInt16(6, true) !== 0) eventfdDrain(efd);
    const ready: number[] = [];
    for (let i = 0; i < polled.length; i++) {
      // POLLIN: exited. POLLNVAL/POLLERR/POLLHUP: a stale snapshot (the fd was closed); the
      // main thread ignores ids it no longer knows, so reporting is harmless and stops a spin.
      if (view.getInt16((i + 1) * POLLFD_SIZE + 6, true) !== 0) {
        const id = (polled[i] as [number, number])[1];
        reported.add(id);
        ready.push(id);
      }
    }
    if (ready.length) self.postMessage({ ready });
  }
  self.postMessage({ stopped: true });
}

self.onmessage = (e: MessageEvent<Init>) => {
  try {
    run(e.data);
  } catch (err) {
    self.postMessage({ error: String((err as Error)?.stack ?? err) });
  }
};
