// A killed run whose thread is still inside a host call once the engine has given up waiting
// (its exit is reported after the engine's short grace, src/daemon/daemon.ts): until that
// thread is over, its store and its fds are not given back. What holds a thread there, now
// that a module opens no fifo or socket (src/engines/wasmtime/file-guard.ts) and reads stdin
// from a fifo the daemon closes at the kill (./stdin-relay.ts), is a write to its stdout or
// stderr: containerd's fifo, which nobody may be reading (`ctr run -d`), and a full pipe holds
// the writer in write(2), which no signal ends (wasmtime's write_all retries it). So the
// daemon reads that fifo itself and throws the bytes away until the thread is over: the write
// completes, the module meets the kill at its next instruction, and its thread ends.
//
// Only a thread seen in write(2) or writev(2) on the very pipe of the container's stdout or
// stderr is drained (/proc/self/task/<tid>/syscall names the call and its fd; the pipe is
// compared by device and inode): what a reader has not read yet is lost then, but a reader
// that leaves a killed module blocked on a full pipe was not reading anyway. Checked every
// CHECK_MS while the thread lives, and on no other thread.

import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { readFile } from "node:fs/promises";

/** How often a stuck thread is looked at (while there is one). */
const CHECK_MS = 10;
/** The most bytes one look drains, so that the main thread serves other pods meanwhile. */
const DRAIN_PER_CHECK = 16 << 20;

/** write(2) and writev(2), pwrite64 and pwritev: their first argument is the fd. */
const WRITES: Record<string, number[]> = { x64: [1, 20, 18, 296], arm64: [64, 66, 68, 70] };

/** The call a thread of this process is in: its number and first argument; undefined if the thread is gone. */
async function threadCall(tid: number): Promise<{ nr: number; fd: number } | "running" | undefined> {
  let s: string;
  try {
    s = await readFile(`/proc/self/task/${tid}/syscall`, "utf8");
  } catch {
    return undefined;
  }
  // "running", or "nr arg0 … sp pc" (the arguments in hex), or "-1 sp pc" (not in a call).
  const f = s.trim().split(" ");
  if (f[0] === "running") return "running";
  return { nr: Number(f[0]), fd: Number.parseInt(f[1] ?? "", 16) };
}

function fileId(fd: number): string | undefined {
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

  /** `tid`: the run's thread; `stdio`: the daemon's own fds of the container's stdout and stderr. */
  constructor(
    private readonly tid: number,
    private readonly stdio: number[],
    private readonly log?: (m: string) => void,
  ) {}

  /** Looks at the thread until it is over (or stop()); resolves then. */
  async run(): Promise<void> {
    const writes = WRITES[process.arch] ?? [];
    let drained = 0;
    try {
      while (!this.stopped) {
        const call = await threadCall(this.tid);
        if (call === undefined) break;
        if (call !== "running" && writes.includes(call.nr)) drained += this.drain(fileId(call.fd));
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
    }
    if (drained) this.log?.(`drained ${drained} bytes of output nobody read, so that the killed run's thread could end`);
  }

  /** Stops looking (the container is deleted: its fds are closed). */
  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  /** Reads and drops what the fifo `id` holds, if it is one of the container's stdout and stderr. */
  private drain(id: string | undefined): number {
    if (id === undefined || this.stopped) return 0;
    let reader = this.readers.get(id);
    if (reader === undefined) {
      const ours = this.stdio.find((fd) => fileId(fd) === id);
      if (ours === undefined) return 0;
      try {
        reader = openSync(`/proc/self/fd/${ours}`, constants.O_RDONLY | constants.O_NONBLOCK);
      } catch {
        return 0;
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
    return n;
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}
