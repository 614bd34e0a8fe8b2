// A running wasi:http service controlled as a run (issue 17 item 2: the shared-mode daemon's
// Pause, Resume, Stats and Update of a service), through the real host library serving
// test/wasm/http/handler.c on loopback: paused, it accepts and answers nothing (a request
// sent meanwhile is answered after resume, as a frozen process's backlog is served after
// thawing); its figures (memory its stores hold, CPU time of its threads) are non-zero and
// grow with load; a CPU quota over its threads throttles a guest spinning in wasm (the
// library's own counts, as cgroup's cpu.stat), one without a quota is not until given one;
// a memory limit below what its stores hold is refused.
import { beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { MemoryLimitBelowUsage } from "../../../src/engines/engine.ts";
import { HttpService, serviceControl } from "../../../src/engines/wasmtime/http/serve.ts";
import { until } from "../../support/until.ts";
import { prepare, REPO, WASM_DIR } from "./helpers.ts";

const HANDLER = join(WASM_DIR, "http", "handler.wasm");
let source: Uint8Array;

function sh(script: string) {
  const r = Bun.spawnSync(["bash", join(REPO, "scripts", script)], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`scripts/${script} failed: ${r.stderr.toString()}`);
}

beforeAll(() => {
  prepare();
  sh("http-host.sh");
  sh("build-http-components.sh");
  source = new Uint8Array(readFileSync(HANDLER));
}, 1_800_000);

const start = (o: Partial<Parameters<typeof HttpService.start>[0]> = {}) =>
  HttpService.start({ source, env: [["WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:0"]], args: [], ...o });

describe("a service controlled as a run", () => {
  test("paused: a new connection is queued and nothing answers; resumed: it is answered", async () => {
    const svc = start();
    const control = serviceControl(svc);
    try {
      const base = `http://127.0.0.1:${svc.port}`;
      expect(await (await fetch(`${base}/`)).text()).toBe("hello from wasi:http\n");
      control.pause();
      let answered = false;
      // A connection of its own (keepalive off), so it must be accepted first.
      const waiting = fetch(`${base}/`, { keepalive: false, headers: { connection: "close" } }).then(async (r) => {
        answered = true;
        return [r.status, await r.text()] as const;
      });
      // Whatever the time given, nothing is accepted or answered while paused (a slow machine
      // only makes an answer less likely: this cannot fail spuriously).
      await Bun.sleep(300);
      expect(answered).toBe(false);
      expect(svc.counters().requests).toBe(1);
      control.resume();
      expect(await waiting).toEqual([200, "hello from wasi:http\n"]);
      expect(svc.counters().requests).toBe(2);
    } finally {
      await svc.stop(10_000);
    }
  }, 60_000);

  test("a connection made after a pause is never accepted while paused (50 rounds of pause, connect, resume)", async () => {
    const svc = start();
    const control = serviceControl(svc);
    try {
      const base = `http://127.0.0.1:${svc.port}`;
      let read = 0;
      for (let i = 0; i < 50; i++) {
        control.pause();
        const waiting = fetch(`${base}/`, { keepalive: false, headers: { connection: "close" } }).then((r) => r.text());
        // Until the connection is surely made: the kernel queues it on the listener meanwhile.
        await Bun.sleep(5);
        // Read while paused: the accept loop took it (its request counted when its head was read).
        if (svc.counters().requests !== i) read++;
        control.resume();
        expect(await waiting).toBe("hello from wasi:http\n");
        await until("the request counted", () => svc.counters().requests === i + 1);
      }
      expect(read).toBe(0);
    } finally {
      await svc.stop(10_000);
    }
  }, 120_000);

  test("paused, a stop still ends it: the abort lets a paused service's waits go", async () => {
    const svc = start();
    const control = serviceControl(svc);
    const base = `http://127.0.0.1:${svc.port}`;
    control.pause();
    const waiting = fetch(`${base}/`).then(
      (r) => r.status,
      () => "cut",
    );
    await Bun.sleep(100);
    expect(await svc.abort()).toBe(true);
    expect(await waiting).toBe("cut");
  }, 60_000);

  test("its figures: the memory its stores hold and the CPU time of its threads, non-zero and growing with load", async () => {
    const svc = start({ threads: 1 });
    const control = serviceControl(svc);
    try {
      const base = `http://127.0.0.1:${svc.port}`;
      expect(await (await fetch(`${base}/`)).text()).toBe("hello from wasi:http\n");
      const cpu0 = control.cpuNs?.() ?? 0;
      expect(cpu0).toBeGreaterThan(0);
      // Three guests asleep at once: three stores held (at least), more than one.
      const one = await until("a store held", async () => (await control.memoryBytes?.()) || undefined, 60_000);
      const sleepers = Array.from({ length: 3 }, () => fetch(`${base}/sleep/1500`).then((r) => r.text()));
      await until("three guests running", () => svc.counters().inFlight === 3, 60_000);
      expect(await control.memoryBytes?.()).toBeGreaterThanOrEqual(3 * Math.min(one, 65536));
      expect(await control.memoryBytes?.()).toBeGreaterThan(one);
      expect(await Promise.all(sleepers)).toEqual(["slept 1500\n", "slept 1500\n", "slept 1500\n"]);
      for (let i = 0; i < 50; i++) await (await fetch(`${base}/`)).text();
      expect(control.cpuNs?.()).toBeGreaterThan(cpu0);
    } finally {
      await svc.stop(10_000);
    }
  }, 60_000);

  test("a CPU quota over its threads throttles a guest spinning in wasm; without one it is not, until an Update gives it one", async () => {
    const limited = start({ cpu: { quota: 10_000, period: 100_000 } });
    const free = start();
    try {
      for (const svc of [limited, free]) void fetch(`http://127.0.0.1:${svc.port}/spin`).catch(() => {});
      const [lc, fc] = [serviceControl(limited), serviceControl(free)];
      await until("both guests spinning", () => limited.counters().inFlight === 1 && free.counters().inFlight === 1, 60_000);
      await until("the limited service throttled twice", () => (lc.cpuThrottling?.().throttledPeriods ?? 0) >= 2, 60_000);
      expect(lc.cpuThrottling?.().throttledNs).toBeGreaterThan(0);
      expect(fc.cpuThrottling?.()).toEqual({ periods: 0, throttledPeriods: 0, throttledNs: 0 });
      fc.setCpu?.({ quota: 20_000, period: 100_000 });
      await until("the updated service throttled", () => (fc.cpuThrottling?.().throttledPeriods ?? 0) > 0, 60_000);
    } finally {
      expect(await limited.abort()).toBe(true);
      expect(await free.abort()).toBe(true);
    }
  }, 60_000);

  test("a memory limit below what its stores hold is refused, nothing changed; one above it is set", async () => {
    const svc = start({ memoryLimitBytes: 64 * 2 ** 20 });
    const control = serviceControl(svc);
    try {
      const base = `http://127.0.0.1:${svc.port}`;
      expect((await fetch(`${base}/`)).status).toBe(200);
      const held = await until("a store held", async () => (await control.memoryBytes?.()) || undefined, 60_000);
      const refused = await control.setMemoryLimit?.(1).catch((e) => e);
      expect(refused).toBeInstanceOf(MemoryLimitBelowUsage);
      expect((refused as MemoryLimitBelowUsage).usage).toBeGreaterThan(0);
      expect(svc.usage().memoryLimit).toBe(64 * 2 ** 20);
      await control.setMemoryLimit?.(held + 32 * 2 ** 20);
      expect(svc.usage().memoryLimit).toBe(held + 32 * 2 ** 20);
      expect((await fetch(`${base}/`)).status).toBe(200);
    } finally {
      await svc.stop(10_000);
    }
  }, 60_000);
});
