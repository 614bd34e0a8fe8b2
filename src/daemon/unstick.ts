// A killed run whose threads are still inside a host call once the engine has given up waiting
// (its exit is reported after the engine's short grace, src/daemon/daemon.ts): until those
// threads are over, the run's store and fds are not given back. What can hold them there, now
// that a core module opens no fifo or socket (src/engines/wasmtime/file-guard.ts) and reads
// stdin from a fifo the daemon closes at the kill (./stdin-relay.ts):
//
//  - a write to its stdout or stderr: containerd's fifo, which nobody may be reading (`ctr run
//    -d`). A full pipe holds the run's thread in write(2), which wasmtime retries on EINTR. So
//    the daemon reads that fifo itself and throws the bytes away: the write completes, the
//    module meets the kill at its next instruction, and its thread ends. Only a thread seen in
//    write(2) or writev(2) on the very pipe of the container's stdout or stderr is drained (the
//    pipe compared by device and inode); what a reader had not read yet is lost then, but a
//    reader that leaves a killed module blocked on a full pipe was not reading anyway.
//  - an open or a read of a fifo in the module's view: a fifo renamed in between the guard's
//    look and the open, or a component's (the guard shadows core modules' WASI only). wasmtime
//    makes these calls on its runtime's blocking threads, not the run's. A thread of the daemon
//    in open*, read*, or write* on a directory or file of this container's view gets
//    WAKE_SIGNAL, whose handler does nothing and does not restart the call: it fails with
//    EINTR, the module meets the kill, and both threads end.
//
// Each stuck run is looked at every CHECK_MS, the daemon's other threads every SCAN_MS at
// most, while it lasts; /proc/self/task/<tid>/syscall names the call and its first argument.

import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { readdir, readFile, readlink } from "node:fs/promises";
import { installWakeSignal, tgkill, WAKE_SIGNAL } from "../linux/wake.ts";

/** How often a stuck run's thread is looked at. */
const CHECK_MS = 10;
/** How often at most the daemon's other threads are looked at for calls on the run's view. */
const SCAN_MS = 100;
/** The most bytes one look drains, so that the main thread serves other pods meanwhile. */
const DRAIN_PER_CHECK = 16 << 20;

/** System calls by what their first argument is (x86_64 and aarch64 numbers). */
const CALLS: Record<string, { writes: number[]; onFd: number[] }> = {
  // writes: write, writev, pwrite64, pwritev. onFd (a file's or a directory's fd first): those,
  // read, readv, pread64, preadv, preadv2, openat, openat2.
  x64: { writes: [1, 20, 18, 296], onFd: [1, 20, 18, 296, 0, 19, 17, 295, 327, 257, 437] },
  arm64: { writes: [64, 66, 68, 70], onFd: [64, 66, 68, 70, 63, 65, 67, 69, 286, 56, 437] },
};

/** The call a thread of this process is in: its number and first argument; undefined if the thread is gone. */
async function threadCall(tid: number | string): Promise<{ nr: number; arg0: number } | "running" | undefined> {
  let s: string;
  try {
    s = await readFile(`/proc/self/task/${tid}/syscall`, "utf8");
  } catch {
    return undefined;
  }
  // "running", or "nr arg0 … sp pc" (the arguments in hex), or "-1 sp pc" (not in a call).
  const f = s.trim().split(" ");
  if (f[0] === "running") return "running";
  return { nr: Number(f[0]), arg0: Number.parseInt(f[1] ?? "", 16) };
}

function fifoId(fd: number): string | undefined {
  try {
    const st = fstatSync(fd);
    return st.isFIFO() ? `${st.dev}:${st.ino}` : undefined;
  } catch {
    return undefined;
  }
}

export class Unstick {
  private stopped = false;
  private readonly readers = new Map<string, number>();
  /** Ends the wait between two looks early. */
  private wake: (() => void) | undefined;
  private drained = 0;
  private woken = 0;

  /**
   * `tid`: the run's thread; `stdio`: the daemon's own fds of the container's stdout and
   * stderr, which this closes once the thread is over or stop() is called; `view`: the
   * module's view (its "/" on the host).
   */
  constructor(
    private readonly tid: number,
    private readonly stdio: number[],
    private readonly view: string,
    private readonly log?: (m: string) => void,
  ) {}

  /** Looks at the run until its thread is over (or stop()); resolves then. */
  async run(): Promise<void> {
    const calls = CALLS[process.arch] ?? { writes: [], onFd: [] };
    let scanned = 0;
    try {
      while (!this.stopped) {
        const call = await threadCall(this.tid);
        if (call === undefined) break;
        if (call !== "running" && calls.writes.includes(call.nr)) this.drain(fifoId(call.arg0));
        else if (performance.now() - scanned >= SCAN_MS) {
          scanned = performance.now();
          await this.wakeCallsOnView(calls.onFd);
        }
        await new Promise<void>((r) => {
          const t = setTimeout(r, CHECK_MS);
          this.wake = () => {
            clearTimeout(t);
            r();
          };
        });
      }
    } finally {
      for (const fd of this.readers.values()) closeQuietly(fd);
      this.readers.clear();
      for (const fd of this.stdio) closeQuietly(fd);
    }
    if (this.drained) this.log?.(`drained ${this.drained} bytes of output nobody read, so that the killed run's thread could end`);
    if (this.woken) this.log?.(`woke ${this.woken} blocked calls on files of the view, so that the killed run's threads could end`);
  }

  /** Stops looking (the container is deleted: its fds are closed). */
  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  /** WAKE_SIGNAL to each thread of ours in a call on a file or directory of the view. */
  private async wakeCallsOnView(onFd: number[]): Promise<void> {
    let tids: string[];
    try {
      tids = await readdir("/proc/self/task");
    } catch {
      return;
    }
    for (const t of tids) {
      if (this.stopped) return;
      const call = await threadCall(t);
      if (!call || call === "running" || !onFd.includes(call.nr) || !(call.arg0 >= 0)) continue;
      let target: string;
      try {
        target = await readlink(`/proc/self/fd/${call.arg0}`);
      } catch {
        continue;
      }
      if (target !== this.view && !target.startsWith(`${this.view}/`)) continue;
      // Still there? (a thread of the runtime's pool goes on to others' calls once this one ends)
      const again = await threadCall(t);
      if (!again || again === "running" || again.nr !== call.nr || again.arg0 !== call.arg0) continue;
      const [ok, errno] = installWakeSignal();
      if (ok < 0) {
        this.log?.(`cannot install the wake signal (errno ${errno}): a blocked call on the view stays`);
        return;
      }
      if (tgkill(Number(t), WAKE_SIGNAL)[0] === 0) this.woken++;
    }
  }

  /** Reads and drops what the fifo `id` holds, if it is one of the container's stdout and stderr. */
  private drain(id: string | undefined): void {
    if (id === undefined || this.stopped) return;
    let reader = this.readers.get(id);
    if (reader === undefined) {
      const ours = this.stdio.find((fd) => fifoId(fd) === id);
      if (ours === undefined) return;
      try {
        reader = openSync(`/proc/self/fd/${ours}`, constants.O_RDONLY | constants.O_NONBLOCK);
      } catch {
        return;
      }
      this.readers.set(id, reader);
    }
    const buf = Buffer.allocUnsafe(1 << 16);
    let n = 0;
    while (n < DRAIN_PER_CHECK) {
      let got: number;
      try {
        got = readSync(reader, buf, 0, buf.length, null);
      } catch {
        break; // EAGAIN: empty for now
      }
      if (got <= 0) break;
      n += got;
    }
    this.drained += n;
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}
