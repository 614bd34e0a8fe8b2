// Update, Pause and Stats of a running wasm container in shared mode (issue 17 item 2), where
// normal mode has runc and a cgroup, through ctr and the Task service's Update over ttrpc (as
// containerd's CRI plugin sends it), on a private containerd of each version (Debian's 1.6 and
// the pinned 2.x, test/support/containerd-versions.ts), with a daemon of this file's
// (--default-memory-limit 64Mi):
//  - A module's memory limit changed while it runs (test/support/grow-steps.ts grows 1 MiB per
//    byte the test appends to a file in its rootfs): a limit below what it holds is refused
//    with runc's words for cgroup v1's EBUSY ("unable to set memory limit"), in both modes,
//    and the module runs on; a lower one refuses its next grow past it; a higher one lets it
//    grow again; Stats reports each new limit. -1 (none) is the daemon's default, never
//    unbounded; a value that is no byte count is refused.
//  - A wasi:http service (test/wasm/http/handler.c): paused (ctr task pause) it answers nothing
//    and a request made meanwhile is answered after resume; Stats' memory (its stores) and CPU
//    time (its threads) are non-zero and grow with load; a CPU quota (Create's, or an
//    Update's) throttles a guest spinning in wasm, as the daemon's own counts say (Stats'
//    cpu.throttling); its memory limit is changed live, below what its stores hold refused.
// Needs root, containerd and runc. No assertion depends on how fast anything runs.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { appendFileSync, existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeImageArchive } from "../../tools/image/index.ts";
import { CONTAINERDS } from "../support/containerd-versions.ts";
import { ctrTasks, fileText, waitFile } from "../support/ctr-tasks.ts";
import { type Daemon, SHARED_RUNTIME, type SharedEnv, sharedEnv } from "../support/daemon.ts";
import { GROW_STEPS_WAT } from "../support/grow-steps.ts";
import { freePort, HELLO, runScript } from "../support/http-services.ts";
import { RUNTIME, type ShimEnv, WASM } from "../support/shim-env.ts";
import { until as waitUntil } from "../support/until.ts";

const canRun = process.getuid?.() === 0 && existsSync("/usr/bin/containerd") && !!Bun.which("runc");
test("prerequisites: root, containerd, runc", () => expect(canRun).toBe(true));

const T = 120_000;
const MiB = 2 ** 20;
const DEFAULT_LIMIT = 64 * MiB;
const IMAGE = "docker.io/library/bunwasi-shared-update:latest";
let seq = 0;
const uid = (what: string) => `su-${what}-${process.pid}-${seq++}`;

/** Liveness only (fail instead of hang), never a bound on how fast anything is. */
const until = <V>(what: string, f: () => V | Promise<V>, timeoutMs = 60_000) => waitUntil(what, f, timeoutMs, 25);

interface Metrics {
  cpu?: { usage?: { total?: number }; throttling?: { periods?: number; throttled_periods?: number; throttled_time?: number } };
  memory?: { usage?: { usage?: number; limit?: number } };
}

for (const c of CONTAINERDS) {
  describe(`Update, Pause and Stats in shared mode, containerd ${c.name}`, () => {
    let shared: SharedEnv | undefined;
    let dir: string;
    let daemon: Daemon;
    let env: ShimEnv;

    beforeAll(async () => {
      runScript("http-host.sh");
      runScript("build-http-components.sh");
      runScript("build-shim.sh");
      shared = await sharedEnv({ prefix: "/tmp/bwsu-", daemonArgs: ["--default-memory-limit", "64Mi"], containerd: { binary: c.binary } });
      ({ dir, daemon, env } = shared);
      writeFileSync(join(dir, "grow.wat"), GROW_STEPS_WAT);
      const archive = join(dir, "image.tar");
      writeImageArchive(archive, {
        name: IMAGE,
        files: [
          { path: "/grow.wat", source: join(dir, "grow.wat") },
          { path: "/handler.wasm", source: join(WASM, "http", "handler.wasm") },
        ],
        config: { entrypoint: ["/grow.wat"] },
      });
      const r = await env.cd.ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`import: ${r.stderr}`);
    }, 1_800_000);

    afterAll(() => shared?.stop(), T);

    const tasks = ctrTasks(
      () => env.cd,
      () => dir,
    );

    const bundle = (id: string) => join(env.cd.state, "io.containerd.runtime.v2.task", env.cd.namespace, id);

    async function metrics(id: string): Promise<Metrics> {
      return JSON.parse(await tasks.ctrOk(["task", "metrics", "--format", "json", id]));
    }

    /** The Update's error message ("" if it succeeded). */
    const updateError = (id: string, resources: object) =>
      tasks.update(id, resources).then(
        () => "",
        (e: Error) => e.message,
      );

    const stop = (id: string) => tasks.killAndRemove(id, 60_000);

    /** Starts grow-steps in `runtime` under `limit`; `grow()` asks for one more MiB and says "+" (grown) or "-" (refused). */
    async function growSteps(runtime: string, limit: number) {
      const id = uid("grow");
      const log = await tasks.runDetached(id, ["/grow.wat"], IMAGE, runtime, ["--memory-limit", String(limit)]);
      await tasks.waitStatus(id, "RUNNING");
      const n = join(bundle(id), "rootfs", "n");
      writeFileSync(n, "");
      let asked = 0;
      /** One grow's answer; with `k`, k grows asked at once and their answers. */
      function grow(): Promise<string>;
      function grow(k: number): Promise<string[]>;
      async function grow(k?: number): Promise<string | string[]> {
        const from = asked;
        asked += k ?? 1;
        appendFileSync(n, "x".repeat(k ?? 1));
        const lines = await until(`answer ${asked} of ${id}`, () => {
          const l = fileText(log).split("\n").filter(Boolean);
          return l.length >= asked ? l : undefined;
        });
        return k === undefined ? (lines[asked - 1] as string) : lines.slice(from, asked);
      }
      return { id, log, grow };
    }

    for (const mode of [
      { name: "normal", runtime: RUNTIME },
      { name: "shared", runtime: SHARED_RUNTIME },
    ] as const) {
      test(
        `${mode.name} mode: a memory limit below what a running module holds is refused as cgroup v1 refuses it ("unable to set memory limit"); the module runs on`,
        async () => {
          const g = await growSteps(mode.runtime, 32 * MiB);
          for (let i = 0; i < 4; i++) expect(await g.grow()).toBe("+");
          const err = await updateError(g.id, { memory: { limit: 2 * MiB } });
          expect(err).toContain("unable to set memory limit to 2097152 (current usage: ");
          expect(await g.grow()).toBe("+");
          expect((await tasks.tasks()).get(g.id)?.status).toBe("RUNNING");
          await stop(g.id);
        },
        T,
      );
    }

    test(
      "a running module's memory limit lowered: its next grow past it is refused; raised: it grows again; Stats reports each limit",
      async () => {
        const g = await growSteps(SHARED_RUNTIME, 32 * MiB);
        // 1 MiB at start and 3 grown: 4 MiB held.
        for (let i = 0; i < 3; i++) expect(await g.grow()).toBe("+");
        expect((await until("a memory figure", async () => (await metrics(g.id)).memory?.usage))?.limit).toBe(32 * MiB);
        expect((await metrics(g.id)).memory?.usage?.usage).toBe(4 * MiB);
        // Lowered to 5 MiB: one more grow fits, the next does not.
        expect(await updateError(g.id, { memory: { limit: 5 * MiB } })).toBe("");
        expect((await metrics(g.id)).memory?.usage?.limit).toBe(5 * MiB);
        expect(await g.grow()).toBe("+");
        expect(await g.grow()).toBe("-");
        // Raised to 8 MiB: three more fit.
        expect(await updateError(g.id, { memory: { limit: 8 * MiB } })).toBe("");
        expect((await metrics(g.id)).memory?.usage?.limit).toBe(8 * MiB);
        for (let i = 0; i < 3; i++) expect(await g.grow()).toBe("+");
        expect(await g.grow()).toBe("-");
        expect((await metrics(g.id)).memory?.usage?.usage).toBe(8 * MiB);
        await stop(g.id);
      },
      T,
    );

    test(
      "attack: an Update may not lift the daemon's bound: -1 (none) is the daemon's default (64Mi), a value that is no byte count is refused",
      async () => {
        const g = await growSteps(SHARED_RUNTIME, 8 * MiB);
        expect(await updateError(g.id, { memory: { limit: -1 } })).toBe("");
        expect((await metrics(g.id)).memory?.usage?.limit).toBe(DEFAULT_LIMIT);
        for (const limit of [2 ** 70, -5, 1.5]) {
          expect(await updateError(g.id, { memory: { limit } })).toContain(`memory.limit ${limit} is not a byte count (or -1)`);
        }
        expect((await metrics(g.id)).memory?.usage?.limit).toBe(DEFAULT_LIMIT);
        // Grown to the default's bound, and no further (1 MiB at start, 63 grows), asked at once.
        expect(await g.grow(70)).toEqual([...Array(63).fill("+"), ...Array(7).fill("-")]);
        await stop(g.id);
      },
      T,
    );

    /** `ctr run -d` of the handler on 127.0.0.1 (the daemon's namespace: ctr names no network namespace). */
    async function serve(extra: string[] = []) {
      const id = uid("http");
      const port = freePort();
      const log = await tasks.runDetached(id, ["/handler.wasm"], IMAGE, SHARED_RUNTIME, [
        "--env",
        `WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:${port}`,
        ...extra,
      ]);
      const up = await waitFile(log, (t) => t.includes("bunwasi: serving wasi:http on"), 60_000);
      if (!up) throw new Error(`${id} never served; log:\n${fileText(log)}\n${daemon.log().slice(-3000)}`);
      return { id, base: `http://127.0.0.1:${port}` };
    }

    test(
      "a paused service answers nothing; a request made while it was paused is answered after resume",
      async () => {
        const s = await serve();
        expect(await (await fetch(`${s.base}/`)).text()).toBe(HELLO);
        await tasks.ctrOk(["task", "pause", s.id]);
        await tasks.waitStatus(s.id, "PAUSED");
        let answered = false;
        const waiting = fetch(`${s.base}/`, { keepalive: false, headers: { connection: "close" } }).then(async (r) => {
          answered = true;
          return await r.text();
        });
        // However long this takes, a paused service answers nothing (a slow machine cannot make it fail).
        await Bun.sleep(500);
        expect(answered).toBe(false);
        await tasks.ctrOk(["task", "resume", s.id]);
        await tasks.waitStatus(s.id, "RUNNING");
        expect(await waiting).toBe(HELLO);
        await stop(s.id);
      },
      T,
    );

    test(
      "a service's Stats: its stores' memory and its threads' CPU time, non-zero and growing with load; its spec's memory limit",
      async () => {
        const s = await serve(["--memory-limit", String(48 * MiB)]);
        expect(await (await fetch(`${s.base}/`)).text()).toBe(HELLO);
        const first = await until("a service's figures", async () => {
          const m = await metrics(s.id);
          return (m.cpu?.usage?.total ?? 0) > 0 && (m.memory?.usage?.usage ?? 0) > 0 ? m : undefined;
        });
        expect(first.memory?.usage?.limit).toBe(48 * MiB);
        // Four guests asleep at once hold four stores: more than the idle service's.
        const sleepers = Array.from({ length: 4 }, () => fetch(`${s.base}/sleep/3000`).then((r) => r.text()));
        await until("more memory held while four guests sleep", async () => {
          const u = (await metrics(s.id)).memory?.usage?.usage ?? 0;
          return u > (first.memory?.usage?.usage ?? 0);
        });
        expect(await Promise.all(sleepers)).toEqual(Array(4).fill("slept 3000\n"));
        for (let i = 0; i < 50; i++) expect(await (await fetch(`${s.base}/`)).text()).toBe(HELLO);
        expect((await metrics(s.id)).cpu?.usage?.total).toBeGreaterThan(first.cpu?.usage?.total ?? 0);
        await stop(s.id);
      },
      T,
    );

    test(
      "a service's CPU quota (Create's) throttles a guest spinning in wasm; one without a quota is not, until an Update gives it one",
      async () => {
        const limited = await serve(["--cpu-quota", "10000", "--cpu-period", "100000"]);
        const free = await serve();
        for (const s of [limited, free]) void fetch(`${s.base}/spin`).catch(() => {});
        const t = await until("a throttled period in the limited service's metrics", async () => {
          const thr = (await metrics(limited.id)).cpu?.throttling;
          return (thr?.throttled_periods ?? 0) > 0 ? thr : undefined;
        });
        expect(t.periods).toBeGreaterThan(0);
        await until("the free service's guest spinning", async () => ((await metrics(free.id)).cpu?.usage?.total ?? 0) > 0);
        expect((await metrics(free.id)).cpu?.throttling?.throttled_periods ?? 0).toBe(0);
        await tasks.update(free.id, { cpu: { quota: 10_000, period: 100_000 } });
        await until(
          "a throttled period after the Update",
          async () => ((await metrics(free.id)).cpu?.throttling?.throttled_periods ?? 0) > 0,
        );
        await stop(limited.id);
        await stop(free.id);
      },
      T,
    );

    test(
      "a service's memory limit changed live: below what its stores hold refused, above it set (Stats reports it) and it serves on",
      async () => {
        const s = await serve(["--memory-limit", String(48 * MiB)]);
        expect(await (await fetch(`${s.base}/`)).text()).toBe(HELLO);
        expect(await updateError(s.id, { memory: { limit: 1 } })).toContain("unable to set memory limit to 1 (current usage: ");
        expect((await metrics(s.id)).memory?.usage?.limit).toBe(48 * MiB);
        expect(await updateError(s.id, { memory: { limit: 40 * MiB } })).toBe("");
        expect((await metrics(s.id)).memory?.usage?.limit).toBe(40 * MiB);
        expect(await (await fetch(`${s.base}/`)).text()).toBe(HELLO);
        await stop(s.id);
      },
      T,
    );
  });
}
