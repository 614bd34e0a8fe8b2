// One poll(2) of many fds, without waiting: which of them are readable now. The exit watcher
// asks this of its pidfds and its other fds (OOM notifications) at each SIGCHLD and tick,
// on the main thread: a thread of its own would be a Bun Worker, a whole JS VM.

import { POLLFD_SIZE, POLLIN, poll } from "./libc.ts";

export class FdPoll {
  private buf = new Uint8Array(POLLFD_SIZE * 16);

  /**
   * The indexes in `fds` of those with anything to report (readable, or POLLERR, POLLHUP,
   * POLLNVAL, which poll(2) reports whatever was asked); empty when none is, or poll failed
   * (EINTR: the next call looks again).
   */
  ready(fds: readonly number[]): number[] {
    if (fds.length === 0) return [];
    const size = fds.length * POLLFD_SIZE;
    if (this.buf.byteLength < size) this.buf = new Uint8Array(size * 2);
    const buf = this.buf;
    const view = new DataView(buf.buffer, buf.byteOffset, size);
    buf.fill(0, 0, size);
    fds.forEach((fd, i) => {
      view.setInt32(i * POLLFD_SIZE, fd, true);
      view.setInt16(i * POLLFD_SIZE + 4, POLLIN, true);
    });
    const [r] = poll(buf, fds.length, 0);
    if (r <= 0) return [];
    const out: number[] = [];
    for (let i = 0; i < fds.length; i++) if (view.getInt16(i * POLLFD_SIZE + 6, true) !== 0) out.push(i);
    return out;
  }
}
