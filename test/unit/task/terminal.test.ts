// The console socket (src/linux/console.ts) and the pty copy (src/task/terminal.ts) without
// runc: this test plays the runtime. It makes a pty itself (/dev/ptmx), sends the master to the
// console socket the way runc does (one message, the fd in SCM_RIGHTS, through a sendmsg of
// its own in this file), and checks what reaches containerd's fifos, what reaches the process
// side, the window size ResizePty sets, CloseIO, and that close() leaves no fd behind.

import { dlopen, FFIType, ptr } from "bun:ffi";
import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, constants, existsSync, mkdtempSync, openSync, readdirSync, readlinkSync, readSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { ConsoleSocket } from "../../../src/linux/console.ts";
import { AF_UNIX, SOCK_CLOEXEC, SOCK_STREAM, setNonBlocking, socket, syscallTable } from "../../../src/linux/libc.ts";
import { Terminal } from "../../../src/task/terminal.ts";

const dir = mkdtempSync(join(tmpdir(), "bunwasi-term-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// The runtime's half, which the shim never needs: connect(2) and sendmsg(2) with SCM_RIGHTS.
const { i32, i64, ptr: P, u32 } = FFIType;
const lib = dlopen("libc.so.6", {
  connect: { args: [i32, P, u32], returns: i32 },
  sendmsg: { args: [i32, P, i32], returns: i64 },
  syscall: { args: [i64, i64, i64, i64], returns: i64 },
}).symbols;

function ioctl(fd: number, req: number, arg: Uint8Array | Uint16Array | Int32Array): number {
  return Number(lib.syscall(syscallTable().ioctl, fd, req, ptr(arg)));
}

/** A new pty: [master, slave], both opened here. */
function openPty(): [number, number] {
  const master = openSync("/dev/ptmx", constants.O_RDWR | constants.O_NOCTTY);
  expect(ioctl(master, 0x40045431 /* TIOCSPTLCK */, new Int32Array([0]))).toBe(0);
  const n = new Int32Array(1);
  expect(ioctl(master, 0x80045430 /* TIOCGPTN */, n)).toBe(0);
  const slave = openSync(`/dev/pts/${n[0]}`, constants.O_RDWR | constants.O_NOCTTY);
  return [master, slave];
}

/** What runc does with --console-socket: connect, send the master with its name. */
function sendMaster(path: string, master: number): void {
  const [s] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC);
  const addr = new Uint8Array(110);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(Buffer.from(path), 2);
  expect(lib.connect(s, ptr(addr), 2 + path.length + 1)).toBe(0);
  const name = Buffer.from("/dev/ptmx");
  const iov = new BigUint64Array([BigInt(ptr(name)), BigInt(name.length)]);
  const control = new Uint8Array(24);
  const cv = new DataView(control.buffer);
  cv.setBigUint64(0, 20n, true); // CMSG_LEN(sizeof(int))
  cv.setInt32(8, 1, true); // SOL_SOCKET
  cv.setInt32(12, 1, true); // SCM_RIGHTS
  cv.setInt32(16, master, true);
  const msg = new BigUint64Array([0n, 0n, BigInt(ptr(iov)), 1n, BigInt(ptr(control)), 24n, 0n]);
  expect(Number(lib.sendmsg(s, ptr(msg), 0))).toBe(name.length);
  closeSync(s);
}

function mkfifo(name: string): string {
  const p = join(dir, name);
  expect(Bun.spawnSync(["mkfifo", p]).exitCode).toBe(0);
  return p;
}

/** Reads a non-blocking fd until `want` has arrived (the copies run on this event loop). */
async function readUntil(fd: number, want: string): Promise<string> {
  let text = "";
  const buf = Buffer.alloc(4096);
  for (let i = 0; i < 2000 && !text.includes(want); i++) {
    try {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n > 0) text += buf.toString("utf8", 0, n);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
    }
    await Bun.sleep(5);
  }
  return text;
}

/** Polls until a write to the process side of the pty fails: its master is gone. */
async function untilHungUp(slave: number): Promise<boolean> {
  for (let i = 0; i < 2000; i++) {
    try {
      writeSync(slave, "x");
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === "EIO";
    }
    await Bun.sleep(5);
  }
  return false;
}

/**
 * This process's fds by what they are, less the event loop's own eventfd/epoll pair that Bun
 * makes once, the first time something is polled (not ours to close).
 */
const ownFds = () =>
  readdirSync("/proc/self/fd")
    .map((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return "(the directory's own fd)";
      }
    })
    .filter((what) => what !== "anon_inode:[eventfd]" && what !== "anon_inode:[eventpoll]")
    .sort();

describe("console socket and terminal copy", () => {
  test("the master arrives through the socket; output, input, resize; CloseIO hangs up at EOF; no fd left", async () => {
    const fdsBefore = ownFds();
    const [master, slave] = openPty();
    const sock = await ConsoleSocket.open();
    sendMaster(sock.path, master);
    closeSync(master); // the runtime's copy goes; ours arrives
    const received = await sock.receiveMaster(30_000);
    await sock.close();
    expect(existsSync(dirname(sock.path))).toBe(false);
    expect(received).toBeGreaterThan(2);

    const stdinPath = mkfifo("in");
    const stdoutPath = mkfifo("out");
    // containerd's side of the fifos: it reads stdout, writes stdin.
    const outReader = openSync(stdoutPath, constants.O_RDONLY | constants.O_NONBLOCK);
    const term = await Terminal.attach(received, { stdin: stdinPath, stdout: stdoutPath, stderr: "" });
    const inWriter = openSync(stdinPath, constants.O_WRONLY | constants.O_NONBLOCK);
    setNonBlocking(slave);

    // Process → containerd, through the line discipline (\n → \r\n).
    writeSync(slave, "hello from the process\n");
    expect(await readUntil(outReader, "hello from the process\r\n")).toContain("hello from the process\r\n");

    // containerd → process.
    writeSync(inWriter, "typed line\n");
    expect(await readUntil(slave, "typed line\n")).toContain("typed line\n");

    // ResizePty: the process side sees the size (TIOCGWINSZ).
    term.resize(120, 42);
    const ws = new Uint16Array(4);
    expect(ioctl(slave, 0x5413 /* TIOCGWINSZ */, ws)).toBe(0);
    expect([ws[0], ws[1]]).toEqual([42, 120]);

    // CloseIO, then the client's writer closing: stdin is at EOF and the terminal hangs up (as
    // runc-v2): the copies end and the process side's writes fail (EIO).
    await term.closeStdin();
    closeSync(inWriter);
    await term.drained;
    expect(await untilHungUp(slave)).toBe(true);
    closeSync(slave);
    await term.close();
    closeSync(outReader);
    expect(ownFds()).toEqual(fdsBefore);
  });

  test("no terminal within the time: receiveMaster says so", async () => {
    const sock = await ConsoleSocket.open();
    await expect(sock.receiveMaster(50)).rejects.toThrow("no terminal from the runtime within 50 ms");
    await sock.close();
    expect(existsSync(dirname(sock.path))).toBe(false);
  });
});
