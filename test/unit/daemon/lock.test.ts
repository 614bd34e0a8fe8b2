// One daemon per socket directory (src/daemon/lock.ts): the flock a daemon takes before it
// touches its socket or sandboxes. flock locks belong to an open file, so a second open file
// in this same process meets the lock exactly as a second daemon would.
import { afterEach, expect, test } from "bun:test";
import { closeSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DaemonLocked, daemonLockPath, lockDaemonDir, readHolder } from "../../../src/daemon/lock.ts";
import { O_CLOEXEC } from "../../../src/linux/libc.ts";
import { tempDir } from "../../support/tmp.ts";

const dirs: { cleanup(): void }[] = [];
const held: number[] = [];
afterEach(() => {
  for (const fd of held.splice(0)) closeSync(fd);
  for (const d of dirs.splice(0)) d.cleanup();
});

function socketIn(sub = "run/bunwasi"): string {
  const d = tempDir("bw-lock-");
  dirs.push(d);
  return join(d.path, sub, "wasmtimed.sock");
}

function lockedError(f: () => unknown): DaemonLocked {
  try {
    f();
  } catch (e) {
    if (e instanceof DaemonLocked) return e;
    throw e;
  }
  throw new Error("expected DaemonLocked, nothing was thrown");
}

test("the first taker gets the lock (directory made 0711, file 0600, its pid and socket in it); a second is refused, naming both", () => {
  const socket = socketIn();
  const fd = lockDaemonDir(socket, 4242);
  held.push(fd);
  const path = daemonLockPath(socket);
  expect(path).toBe(join(socket, "..", "daemon.lock"));
  expect(statSync(join(socket, "..")).mode & 0o777).toBe(0o711);
  expect(statSync(path).mode & 0o777).toBe(0o600);
  expect(readFileSync(path, "utf8")).toBe(`4242 ${socket}\n`);

  const e = lockedError(() => lockDaemonDir(socket, 5353));
  expect(e.holder).toEqual({ pid: 4242, socket });
  expect(e.message).toBe(
    `another daemon (pid 4242) already serves ${socket} (it holds the lock ${path}); nothing was changed: stop that daemon first, or use another directory`,
  );
  // The refused one wrote nothing and keeps no fd open on the file.
  expect(readFileSync(path, "utf8")).toBe(`4242 ${socket}\n`);
  const open = readdirSync("/proc/self/fd").filter((f) => {
    try {
      return readlinkSync(`/proc/self/fd/${f}`) === path;
    } catch {
      return false;
    }
  });
  expect(open).toEqual([String(fd)]);
});

test("a second socket in the same directory is refused too: the sandboxes directory is per directory", () => {
  const socket = socketIn();
  held.push(lockDaemonDir(socket, 4242));
  const other = join(socket, "..", "other.sock");
  const e = lockedError(() => lockDaemonDir(other, 5353));
  expect(e.message).toStartWith(`another daemon (pid 4242) serving ${socket} owns ${join(socket, "..")} and its sandboxes`);
});

test("the lock ends with its fd (as with a SIGKILLed daemon): the next taker gets it and writes itself in", () => {
  const socket = socketIn();
  closeSync(lockDaemonDir(socket, 4242));
  const fd = lockDaemonDir(socket, 5353);
  held.push(fd);
  expect(readFileSync(daemonLockPath(socket), "utf8")).toBe(`5353 ${socket}\n`);
});

test("the lock's fd is close-on-exec: runc and containers never inherit it", () => {
  const fd = lockDaemonDir(socketIn(), 4242);
  held.push(fd);
  const flags = Number.parseInt(/^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))?.[1] ?? "0", 8);
  expect(flags & O_CLOEXEC).toBe(O_CLOEXEC);
});

test("a lock file that does not say who holds it gives an error without a pid", () => {
  const socket = socketIn();
  held.push(lockDaemonDir(socket, 4242));
  writeFileSync(daemonLockPath(socket), "garbage");
  const e = lockedError(() => lockDaemonDir(socket, 5353));
  expect(e.holder).toEqual({ pid: null, socket: null });
  expect(e.message).toStartWith(`another daemon already serves ${socket} (it holds the lock`);
  expect(readHolder(join(socket, "..", "missing"))).toEqual({ pid: null, socket: null });
});
