// Every process exec and exit on the machine, with the kernel's own timestamps, from the
// proc connector (netlink): what bench/shim/timeline.ts needs to tell how long each process
// of a `ctr run --rm` lived (shim start, server, runc calls, the container's process, shim
// delete) without tracing any of them (ptrace would slow each syscall down). Not a test.
// Needs root.
//
//   bun bench/shim/proc-events.ts    # one JSON line per event on stdout, until killed
//
// A line: {"t": <CLOCK_MONOTONIC ns, as process.hrtime.bigint()>, "ev": "fork"|"exec"|"exit",
// "pid", "ppid" (fork and exec), "cmd" (exec only: argv joined by spaces), "code" (exit only:
// the wait status)}. Only whole processes: a thread's start or exit is not reported.

import { readFileSync, readSync, writeSync } from "node:fs";
import { bindRaw, socket, strerror } from "../../src/linux/libc.ts";

const AF_NETLINK = 16;
const SOCK_DGRAM = 2;
const NETLINK_CONNECTOR = 11;
const CN_IDX_PROC = 1;
const CN_VAL_PROC = 1;
const PROC_CN_MCAST_LISTEN = 1;
const NLMSG_DONE = 3;
const PROC_EVENT_FORK = 0x1;
const PROC_EVENT_EXEC = 0x2;
const PROC_EVENT_EXIT = 0x80000000;
// struct nlmsghdr (16 bytes), then struct cn_msg (20), then struct proc_event.
const NLMSG_HDRLEN = 16;
const CN_MSG_LEN = 20;

export interface ProcEvent {
  t: string;
  ev: "fork" | "exec" | "exit";
  pid: number;
  ppid?: number;
  cmd?: string;
  code?: number;
}

function open(): number {
  const [fd, err] = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_CONNECTOR);
  if (fd < 0) throw new Error(`netlink socket: ${strerror(err)}`);
  // struct sockaddr_nl: family u16, pad u16, pid u32 (0: the kernel picks), groups u32.
  const addr = new Uint8Array(12);
  const a = new DataView(addr.buffer);
  a.setUint16(0, AF_NETLINK, true);
  a.setUint32(8, CN_IDX_PROC, true);
  const [r, berr] = bindRaw(fd, addr);
  if (r < 0) throw new Error(`netlink bind: ${strerror(berr)} (root is needed)`);
  // Subscribe: a cn_msg to the proc connector holding PROC_CN_MCAST_LISTEN. An unconnected
  // netlink socket's write goes to the kernel.
  const msg = new Uint8Array(NLMSG_HDRLEN + CN_MSG_LEN + 4);
  const m = new DataView(msg.buffer);
  m.setUint32(0, msg.length, true);
  m.setUint16(4, NLMSG_DONE, true);
  m.setUint32(12, process.pid, true);
  m.setUint32(16, CN_IDX_PROC, true);
  m.setUint32(20, CN_VAL_PROC, true);
  m.setUint16(32, 4, true);
  m.setUint32(36, PROC_CN_MCAST_LISTEN, true);
  writeSync(fd, msg);
  return fd;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "latin1").replace(/\0+$/, "").replaceAll("\0", " ");
  } catch {
    return "?"; // gone already
  }
}

function ppidOf(pid: number): number {
  try {
    return Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "latin1"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

if (import.meta.main) {
  const fd = open();
  const buf = new Uint8Array(4096);
  const v = new DataView(buf.buffer);
  for (;;) {
    // Blocking: this process does nothing else.
    const n = readSync(fd, buf);
    for (let off = 0; off + NLMSG_HDRLEN <= n; ) {
      const len = v.getUint32(off, true);
      const ev = off + NLMSG_HDRLEN + CN_MSG_LEN;
      const what = v.getUint32(ev, true);
      const t = v.getBigUint64(ev + 8, true).toString();
      const pid = v.getInt32(ev + 16, true);
      const tgid = v.getInt32(ev + 20, true);
      let out: ProcEvent | null = null;
      // fork: parent pid, parent tgid, child pid, child tgid.
      const child = v.getInt32(ev + 24, true);
      if (what === PROC_EVENT_FORK && child === v.getInt32(ev + 28, true)) out = { t, ev: "fork", pid: child, ppid: tgid };
      else if (pid === tgid && what === PROC_EVENT_EXEC) out = { t, ev: "exec", pid, ppid: ppidOf(pid), cmd: cmdline(pid) };
      else if (pid === tgid && what === PROC_EVENT_EXIT) out = { t, ev: "exit", pid, code: v.getUint32(ev + 24, true) };
      // Synchronous: the loop never yields, so a buffered write would wait for ever.
      if (out) writeSync(1, `${JSON.stringify(out)}\n`);
      off += Math.max(len, NLMSG_HDRLEN) + 3 - ((Math.max(len, NLMSG_HDRLEN) + 3) % 4);
    }
  }
}
