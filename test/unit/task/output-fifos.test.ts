// The task's hold on a process's output fifos (src/task/output-fifos.ts), on real fifos: which
// fds it holds (FIFOs only, each once), the wait before an exit is reported (until containerd
// has read what is left; a reader that stops, or a writer that never stops, does not hold it),
// and through the Task service with a fake host (test/unit/task/fake-host.ts): the Wait answer
// of an init and of an exec comes only once the client has read the output the process left,
// and no fd of the hold outlives the exit's report, a failed Create or a Delete.

import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { closeSync, constants, mkdtempSync, openSync, readdirSync, readSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TaskExit } from "../../../src/task/gen/containerd/events/task.ts";
import { CreateTaskRequest, ExecProcessRequest } from "../../../src/task/gen/containerd/runtime/task/v2/shim.ts";
import { OUTPUT_POLL_MS, OUTPUT_STALL_MS, OutputFifos } from "../../../src/task/output-fifos.ts";
import { TaskService } from "../../../src/task/task-service.ts";
import { fifoMaker } from "../../support/fifos.ts";
import { ctxFor, FakeHost } from "./fake-host.ts";

const dir = mkdtempSync(join(tmpdir(), "bunwasi-outfifo-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const fifo = fifoMaker(dir);
const fdCount = () => readdirSync("/proc/self/fd").length;
/** What the output leaves in the fifo when its process ends: less than a pipe holds. */
const LEFT = "x".repeat(10_000);

/** containerd's end of a fifo: a non-blocking reader that reads at most `chunk` bytes per call. */
function clientReader(path: string) {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  let got = 0;
  return {
    fd,
    get got() {
      return got;
    },
    /** Reads up to `chunk` bytes if any are there. */
    read(chunk = 1024): number {
      try {
        const k = readSync(fd, Buffer.alloc(chunk));
        got += k;
        return k;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EAGAIN") return 0;
        throw e;
      }
    },
    close: () => closeSync(fd),
  };
}

/** A new fifo with containerd's reader on it, the process's read-write end, and our hold of that end. */
function held() {
  const path = fifo();
  const reader = clientReader(path);
  const rw = openSync(path, constants.O_RDWR);
  return { path, reader, rw, out: OutputFifos.hold([rw]) };
}

describe("OutputFifos", () => {
  test("holds a copy of each FIFO once (stdout and stderr the same fifo: one), and nothing of a file or /dev/null", () => {
    const path = fifo();
    const reader = clientReader(path);
    const rw = openSync(path, constants.O_RDWR);
    const file = openSync(join(dir, "log"), constants.O_WRONLY | constants.O_CREAT, 0o600);
    const nul = openSync("/dev/null", "w");
    const before = fdCount();
    try {
      const same = OutputFifos.hold([rw, rw]);
      expect(same.size).toBe(1);
      const none = OutputFifos.hold([file, nul, -1]);
      expect(none.size).toBe(0);
      expect(fdCount()).toBe(before + 1);
      // What it sees is what the fifo holds, and reading it is the client's only.
      writeSync(rw, "hello");
      expect(same.unread()).toBe(5);
      expect(reader.read()).toBe(5);
      expect(same.unread()).toBe(0);
      same.close();
      same.close();
      none.close();
      expect(fdCount()).toBe(before);
    } finally {
      for (const fd of [rw, file, nul]) closeSync(fd);
      reader.close();
    }
  });

  test("the wait ends once the client has read what was left, not before", async () => {
    const { reader, rw, out } = held();
    try {
      writeSync(rw, LEFT);
      closeSync(rw); // the process is gone; our hold keeps the fifo
      let looks = 0;
      // Each look the client reads a little: the wait must see it through to the end.
      await out.read({
        sleep: async () => {
          looks++;
          reader.read(1000);
        },
      });
      expect(reader.got).toBe(LEFT.length);
      expect(looks).toBe(LEFT.length / 1000);
    } finally {
      out.close();
      reader.close();
    }
  });

  test("a client that reads no more ends the wait after the stall (counted in looks), with the bytes still there", async () => {
    const { reader, rw, out } = held();
    try {
      writeSync(rw, LEFT);
      let looks = 0;
      const told: number[] = [];
      await out.read({ sleep: async () => void looks++, onWait: (k) => told.push(k) });
      expect(looks).toBe(OUTPUT_STALL_MS / OUTPUT_POLL_MS);
      expect(told).toEqual([LEFT.length]);
      expect(out.unread()).toBe(LEFT.length);
    } finally {
      out.close();
      closeSync(rw);
      reader.close();
    }
  });

  test("a fifo nobody has open for reading (`ctr run -d`) is not waited for: its bytes stay for a reader to come", async () => {
    const { path, reader, rw, out } = held();
    try {
      writeSync(rw, LEFT);
      // The process and the client are gone; our hold keeps the pipe and its bytes.
      closeSync(rw);
      reader.close();
      let looks = 0;
      await out.read({ sleep: async () => void looks++ });
      expect(looks).toBe(0);
      expect(out.unread()).toBe(LEFT.length);
      const late = clientReader(path);
      expect(late.read(LEFT.length)).toBe(LEFT.length);
      late.close();
    } finally {
      out.close();
    }
  });

  test("a writer that outlives the process and a client that keeps up end the wait at its bound", async () => {
    const { reader, rw, out } = held();
    try {
      writeSync(rw, LEFT);
      let looks = 0;
      // Each look the client reads 100 bytes and the writer adds 150: what the client read is
      // never progress on what was left (the backlog only grows), so the stall ends it.
      await out.read({
        sleep: async () => {
          looks++;
          reader.read(100);
          writeSync(rw, "y".repeat(150));
        },
      });
      expect(looks).toBe(OUTPUT_STALL_MS / OUTPUT_POLL_MS);
      // A client that drains faster than the writer adds makes progress at every look, and the
      // backlog still never empties: the bound ends it.
      let more = 0;
      await out.read({
        maxMs: 40 * OUTPUT_POLL_MS,
        sleep: async () => {
          more++;
          reader.read(200);
          writeSync(rw, "y".repeat(150));
        },
      });
      expect(more).toBe(40);
      expect(out.unread()).toBeGreaterThan(0);
    } finally {
      out.close();
      closeSync(rw);
      reader.close();
    }
  });
});

describe("through the Task service", () => {
  const NS = "default";
  const ctx = ctxFor(NS);
  const hosts: FakeHost[] = [];
  afterEach(() => {
    for (const h of hosts.splice(0)) rmSync(h.root, { recursive: true, force: true });
  });
  function setup() {
    const host = new FakeHost();
    hosts.push(host);
    const service = new TaskService({ host, defaultNamespace: NS, shimPid: 4242, onShutdown: () => {} });
    return { host, service };
  }

  /** What the process wrote and left in the fifo when it ended: `LEFT`, through a writer of its own. */
  function processWrites(path: string): void {
    const w = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
    writeSync(w, LEFT);
    closeSync(w);
  }

  /**
   * Reads a little each turn of the loop until `answered` settles; the bytes the client had
   * then, and whether the hold's fds were gone by then.
   */
  async function readUntil(reader: ReturnType<typeof clientReader>, answered: Promise<unknown>): Promise<number> {
    let at = -1;
    void answered.then(() => (at = reader.got));
    while (at < 0) {
      reader.read(1000);
      await Bun.sleep(0);
    }
    return at;
  }

  test("an init's Wait is answered, and its TaskExit published, once the client has read the output it left; then the hold's fd is gone", async () => {
    const { host, service } = setup();
    const out = fifo();
    const reader = clientReader(out);
    try {
      const before = fdCount();
      // stdout and stderr the same fifo (as `ctr` gives them with a terminal off): one hold.
      await service.create(CreateTaskRequest.fromPartial({ id: "c1", bundle: "/b/c1", rootfs: [], stdout: out, stderr: out }), ctx);
      expect(fdCount()).toBe(before + 1);
      await service.start({ id: "c1", execId: "" }, ctx);
      processWrites(out);
      host.exit(NS, "c1", 3);
      const answered = service.wait({ id: "c1", execId: "" }, ctx);
      expect(await readUntil(reader, answered)).toBe(LEFT.length);
      expect((await answered).exitStatus).toBe(3);
      const exit = host.events.find((e) => e.topic === "/tasks/exit");
      expect(exit && TaskExit.decode(exit.event.value).exitStatus).toBe(3);
      expect(fdCount()).toBe(before);
      // Every writer gone: the client's end of output.
      expect(readSync(reader.fd, Buffer.alloc(8))).toBe(0);
      await service.delete({ id: "c1", execId: "" }, ctx);
      expect(fdCount()).toBe(before);
    } finally {
      reader.close();
    }
  });

  test("an exec's Wait is answered once the client has read what it left; its hold's fd goes with the report", async () => {
    const { host, service } = setup();
    const out = fifo();
    const reader = clientReader(out);
    try {
      await service.create(CreateTaskRequest.fromPartial({ id: "c1", bundle: "/b/c1", rootfs: [] }), ctx);
      await service.start({ id: "c1", execId: "" }, ctx);
      const before = fdCount();
      const spec = { typeUrl: "p", value: new TextEncoder().encode(JSON.stringify({ args: ["/x"], cwd: "/" })) };
      await service.exec(ExecProcessRequest.fromPartial({ id: "c1", execId: "e1", spec, stdout: out }), ctx);
      await service.start({ id: "c1", execId: "e1" }, ctx);
      expect(fdCount()).toBe(before + 1);
      processWrites(out);
      host.exitExec(NS, "c1", "e1", 5);
      const answered = service.wait({ id: "c1", execId: "e1" }, ctx);
      expect(await readUntil(reader, answered)).toBe(LEFT.length);
      expect((await answered).exitStatus).toBe(5);
      expect(fdCount()).toBe(before);
    } finally {
      reader.close();
    }
  });

  test("a client that never reads does not hold the exit; a file:// output is not held", async () => {
    const { host, service } = setup();
    const out = fifo();
    const reader = clientReader(out);
    try {
      const before = fdCount();
      await service.create(
        CreateTaskRequest.fromPartial({ id: "c1", bundle: "/b/c1", rootfs: [], stdout: out, stderr: `file://${join(dir, "c1.log")}` }),
        ctx,
      );
      expect(fdCount()).toBe(before + 1);
      await service.start({ id: "c1", execId: "" }, ctx);
      processWrites(out);
      host.exit(NS, "c1", 0);
      expect((await service.wait({ id: "c1", execId: "" }, ctx)).exitStatus).toBe(0);
      expect(reader.got).toBe(0);
      expect(fdCount()).toBe(before);
    } finally {
      reader.close();
    }
  });

  test("a failed Create and the Delete of a never-started container leave no fd of the hold", async () => {
    const { host, service } = setup();
    const out = fifo();
    const reader = clientReader(out);
    try {
      const before = fdCount();
      host.prepareError = new Error("config.json: not valid JSON");
      await expect(
        service.create(CreateTaskRequest.fromPartial({ id: "c1", bundle: "/b/c1", rootfs: [], stdout: out }), ctx),
      ).rejects.toThrow("not valid JSON");
      expect(fdCount()).toBe(before);
      host.prepareError = null;
      await service.create(CreateTaskRequest.fromPartial({ id: "c2", bundle: "/b/c2", rootfs: [], stdout: out }), ctx);
      expect(fdCount()).toBe(before + 1);
      await service.delete({ id: "c2", execId: "" }, ctx);
      expect(fdCount()).toBe(before);
    } finally {
      reader.close();
    }
  });
});
