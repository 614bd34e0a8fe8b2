// The daemon's sandboxes share one events connection per containerd (src/task/events.ts,
// EventsConnections): each publisher's events arrive whole and in order over it, a connection
// is made once for all of them, and closed when the last publisher closes. A shim server's
// publisher keeps one of its own. Against a real ttrpc server standing in for containerd's
// Events service.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { EventsConnections, encodeEvent, Publisher } from "../../../src/task/events.ts";
import { TaskExit } from "../../../src/task/gen/containerd/events/task.ts";
import { EventsDefinition, type ForwardRequest } from "../../../src/task/gen/containerd/services/ttrpc/events/v1/events.ts";
import { Server } from "../../../src/ttrpc/index.ts";
import { tempDir } from "../../support/tmp.ts";

const dir = tempDir();
afterAll(() => dir.cleanup());
let n = 0;

/** A stand-in for containerd's ttrpc Events service: what it got, and how many connections it accepted. */
function containerd() {
  const socket = join(dir.path, `cd${n++}.sock`);
  const got: { ns: string; id: string }[] = [];
  let connections = 0;
  const server = new Server({
    handshaker: () => {
      connections++;
    },
  });
  server.register(EventsDefinition, {
    forward: async (req: ForwardRequest) => {
      const e = req.envelope!;
      got.push({ ns: e.namespace, id: TaskExit.decode(e.event!.value).containerId });
      return {};
    },
  });
  server.listen(socket);
  return { address: `unix://${socket}`, got, connections: () => connections, server };
}

const exit = (id: string) => encodeEvent(TaskExit, TaskExit.fromPartial({ containerId: id, id, pid: 1, exitStatus: 0 }));

test("publishers sharing EventsConnections: one connection for all, every event in order, closed with the last", async () => {
  const cd = containerd();
  const shared = new EventsConnections();
  const logs: string[] = [];
  const pubs = ["a", "b", "c"].map((ns) => new Publisher(cd.address, ns, (m) => logs.push(m), shared));
  for (let i = 0; i < 5; i++) for (const [k, p] of pubs.entries()) p.publish("/tasks/exit", exit(`${"abc"[k]}${i}`));
  await Promise.all(pubs.map((p) => p.flushed()));
  expect(cd.connections()).toBe(1);
  for (const ns of ["a", "b", "c"])
    expect(cd.got.filter((g) => g.ns === ns).map((g) => g.id)).toEqual([0, 1, 2, 3, 4].map((i) => `${ns}${i}`));
  expect(logs).toEqual([]);
  // Two close: the connection stays for the third, which still publishes over it.
  pubs[0]!.close();
  pubs[1]!.close();
  pubs[1]!.close(); // a second close releases nothing more
  expect(shared.size).toBe(1);
  pubs[2]!.publish("/tasks/exit", exit("c5"));
  await pubs[2]!.flushed();
  expect(cd.got.at(-1)).toEqual({ ns: "c", id: "c5" });
  expect(cd.connections()).toBe(1);
  pubs[2]!.close();
  expect(shared.size).toBe(0);
  // A publisher made afterwards connects again.
  const later = new Publisher(cd.address, "d", (m) => logs.push(m), shared);
  later.publish("/tasks/exit", exit("d0"));
  await later.flushed();
  expect(cd.connections()).toBe(2);
  later.close();
  await cd.server.shutdown(100);
});

test("an event published after its shared publisher closed is dropped, said, and makes no connection", async () => {
  const cd = containerd();
  const shared = new EventsConnections();
  const logs: string[] = [];
  const p = new Publisher(cd.address, "a", (m) => logs.push(m), shared);
  p.close();
  p.publish("/tasks/exit", exit("late"));
  await p.flushed();
  expect(cd.connections()).toBe(0);
  expect(logs).toEqual(["dropping event /tasks/exit: published after its sandbox closed"]);
  await cd.server.shutdown(100);
});

test("without EventsConnections each publisher has a connection of its own (a shim server's)", async () => {
  const cd = containerd();
  const pubs = ["a", "b"].map((ns) => new Publisher(cd.address, ns, () => {}));
  for (const p of pubs) p.publish("/tasks/exit", exit("x"));
  await Promise.all(pubs.map((p) => p.flushed()));
  expect(cd.connections()).toBe(2);
  for (const p of pubs) p.close();
  await cd.server.shutdown(100);
});
