// Output fifos (src/task/stdio.ts) on real fifos: the container's stdout is opened only
// once the client's reader is there, so output written by a process that ends before the
// client reads is not lost with the pipe; the wait itself is never seen by the reader as
// an end of output; and a client that never reads does not hold a Create for ever.

import { afterAll, expect, test } from "bun:test";
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Stdio, withReader } from "../../../src/task/stdio.ts";
import { fifoMaker } from "../../support/fifos.ts";

const dir = mkdtempSync(join(tmpdir(), "bunwasi-stdio-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const fifo = fifoMaker(dir);

test("stdout is opened only once the client reads it, and what is written then reaches the client after our fds close", async () => {
  const path = fifo();
  let opened = false;
  const pending = Stdio.open({ stdin: "", stdout: path, stderr: "" }).then((s) => {
    opened = true;
    return s;
  });
  // No reader yet: a write-and-exit now would leave bytes in a pipe that dies with it.
  await Bun.sleep(100);
  expect(opened).toBe(false);
  const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stdio = await pending;
    writeSync(stdio.fds[1], "hello\n");
    await stdio.close();
    const buf = Buffer.alloc(64);
    const got = readSync(reader, buf);
    expect(buf.subarray(0, got).toString()).toBe("hello\n");
    // Every writer gone: the end of the output.
    expect(readSync(reader, buf)).toBe(0);
  } finally {
    closeSync(reader);
  }
});

test("the reader never sees an end of output while we open (the probe closes after the read-write fd is open)", async () => {
  const path = fifo();
  const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stdio = await Stdio.open({ stdin: "", stdout: path, stderr: "" });
    // A writer is open, no data: EAGAIN, where an end of output would read 0.
    expect(() => readSync(reader, Buffer.alloc(8))).toThrow(expect.objectContaining({ code: "EAGAIN" }));
    await stdio.close();
  } finally {
    closeSync(reader);
  }
});

test("a client that never opens its end: the fifo is opened read-write after the wait", async () => {
  const path = fifo();
  const fd = await withReader(path, () => openSync(path, constants.O_RDWR), 50);
  try {
    // Read-write: writes succeed with no reader at all (no SIGPIPE, no ENXIO).
    expect(writeSync(fd, "x")).toBe(1);
  } finally {
    closeSync(fd);
  }
});

test("a path that is missing fails as before, without waiting", async () => {
  await expect(Stdio.open({ stdin: "", stdout: join(dir, "missing"), stderr: "" })).rejects.toThrow(/ENOENT|no such file/i);
});

test("a file:// output that is a fifo nobody reads fails at once (ENXIO) instead of blocking the event loop", async () => {
  const path = fifo();
  await expect(Stdio.open({ stdin: "", stdout: `file://${path}`, stderr: "" })).rejects.toThrow(/ENXIO|no such device/i);
});

test("a file:// output is appended to, and the fd we hand on is blocking", async () => {
  const path = join(dir, "log-append");
  const stdio = await Stdio.open({ stdin: "", stdout: `file://${path}`, stderr: `file://${path}` });
  try {
    writeSync(stdio.fds[1], "a");
    writeSync(stdio.fds[2], "b");
    // The open file's flags, as the kernel shows them (octal).
    const flags = Number.parseInt(/^flags:\s*(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${stdio.fds[1]}`, "utf8"))?.[1] ?? "", 8);
    expect(flags & constants.O_APPEND).toBe(constants.O_APPEND);
    expect(flags & constants.O_NONBLOCK).toBe(0);
  } finally {
    await stdio.close();
  }
  expect(readFileSync(path, "utf8")).toBe("ab");
});
