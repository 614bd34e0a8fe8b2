// wasi:http service scenarios that run alike in normal mode (test/e2e/http.test.ts: the shim's
// executor serves) and shared mode (test/e2e/shared-http.test.ts: the containerd-wasmtimed
// daemon serves): the helpers to serve test/wasm/http/handler.c through `ctr run -d` and stop
// it, and the tests both modes register inside their own describe. What only one mode has
// (an outgoing request, the daemon's pid and leftovers) comes in as hooks, so each mode's test
// asserts what it always did.

import { expect, test } from "bun:test";
import { join } from "node:path";
import type { Containerd } from "./containerd.ts";
import { ctrTasks, fileText, waitFile } from "./ctr-tasks.ts";
import { REPO } from "./shim-env.ts";

export const HTTP_IMAGE = "docker.io/library/bunwasi-test-http:latest";
export const HELLO = "hello from wasi:http\n";

export type HttpMode = "normal" | "shared";

/** Runs scripts/<script> (a build step of the services' files); throws with its stderr if it fails. */
export function runScript(script: string): void {
  const r = Bun.spawnSync(["bash", join(REPO, "scripts", script)], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${script} failed: ${r.stderr.toString()}`);
}

/** A loopback port nobody listens on right now. */
export function freePort(): number {
  const s = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("") });
  const port = s.port as number;
  s.stop(true);
  return port;
}

export interface ServeOptions {
  /** Where it listens on 127.0.0.1 (default a free port); 8080 sets no address: the default 0.0.0.0:8080. */
  port?: number;
  /** ctr flags before the image. */
  extra?: string[];
  /** The container's args (default the handler). */
  args?: string[];
}

export interface HttpHarness {
  runtime: string;
  cd: () => Containerd;
  /** The folder for the containers' logs. */
  logs: () => string;
  /** ctr flags that put the service on 127.0.0.1:port (normal mode adds --net-host). */
  addressArgs: (port: number) => string[];
  /** What to show when a service never serves. */
  diagnostics: () => string;
}

/** `serve`/`stop` and ctr's task helpers for one mode. */
export function httpServices(h: HttpHarness) {
  const ctr = ctrTasks(h.cd, h.logs);

  /** `ctr run -d` of the handler; resolves once it serves, with its base URL, log file and port. */
  async function serve(id: string, o: ServeOptions = {}) {
    const port = o.port ?? freePort();
    const addr = o.port === 8080 ? [] : h.addressArgs(port);
    const log = await ctr.runDetached(id, o.args ?? ["/handler.wasm"], HTTP_IMAGE, h.runtime, [...addr, ...(o.extra ?? [])]);
    const up = await waitFile(log, (t) => t.includes("bunwasi: serving wasi:http on"), 30_000);
    if (!up) throw new Error(`${id} never served; log:\n${fileText(log)}\n${h.diagnostics()}`);
    return { base: `http://127.0.0.1:${port}`, log, port };
  }

  /** Kill with `signal` (ctr's default SIGTERM), wait for the exit, delete; the exit code. */
  async function stop(id: string, signal?: string): Promise<number> {
    await ctr.ctrOk(["task", "kill", ...(signal ? ["-s", signal] : []), id]);
    await ctr.waitStatus(id, "STOPPED", 60_000);
    const code = await ctr.deleteTask(id);
    await ctr.ctrOk(["containers", "rm", id]);
    return code;
  }

  return { ...ctr, serve, stop };
}

/** True once a new connection to `base` is refused (the listener closed), within 200 tries. */
export async function refusedSoon(base: string): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(`${base}/`, { keepalive: false });
      await Bun.sleep(10);
    } catch {
      return true;
    }
  }
  return false;
}

/** What one mode adds to the common scenarios. */
export interface ScenarioHooks {
  mode: HttpMode;
  uid: (what: string) => string;
  /** The first scenario's title (each mode's list of what it checks). */
  serveTitle: string;
  /** Right after the service serves (shared: the task's pid is the daemon's). */
  serving?: (id: string) => Promise<void>;
  /** After the 50 concurrent requests (normal: an outgoing request). */
  moreRequests?: (base: string) => Promise<void>;
  /** After the guest's logs reached the container log (shared: not the daemon's log). */
  guestLogged?: () => void;
  /** Taken before a scenario that must leave nothing behind; the check to run once it is deleted. */
  leavesNothing?: () => () => Promise<void>;
  secondSignal: {
    title: string;
    /** What the log says once the drain is under way. */
    draining: string;
    /** What the log says once the second signal cut it. */
    cut: string;
  };
}

/** Registers the scenarios both modes run, in the caller's describe. */
export function httpServiceScenarios(s: ReturnType<typeof httpServices>, k: ScenarioHooks, timeoutMs: number): void {
  const { serve, stop, ctrOk, waitStatus, deleteTask } = s;
  const nothingLeft = () => k.leavesNothing?.() ?? (async () => {});
  const name = (title: string) => `${k.mode} mode: ${title}`;

  test(
    name(k.serveTitle),
    async () => {
      const check = nothingLeft();
      const id = k.uid("serve");
      const { base, log } = await serve(id, { extra: ["--env", "WASMTIME_HTTP_PROXY_BACKLOG=64"] });
      let stopped = false;
      try {
        await k.serving?.(id);
        const hello = await fetch(`${base}/`);
        expect(hello.status).toBe(200);
        expect(await hello.text()).toBe(HELLO);

        expect(await (await fetch(`${base}/env/GREETING`)).text()).toBe("from the image");
        expect(await (await fetch(`${base}/env/WASMTIME_HTTP_PROXY_SOCKET_ADDR`)).text()).toBe("unset");
        expect(await (await fetch(`${base}/env/WASMTIME_HTTP_PROXY_BACKLOG`)).text()).toBe("unset");

        const body = new Uint8Array(1 << 20);
        for (let i = 0; i < body.length; i++) body[i] = (i * 31 + (i >> 9)) & 0xff;
        const echo = await fetch(`${base}/echo`, { method: "POST", body });
        expect(echo.status).toBe(200);
        const back = new Uint8Array(await echo.arrayBuffer());
        expect(back.length).toBe(body.length);
        expect(Buffer.compare(Buffer.from(back), Buffer.from(body))).toBe(0);

        const many = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            fetch(`${base}/echo`, { method: "POST", body: `n${i}` }).then(async (r) => [r.status, await r.text()]),
          ),
        );
        expect(many).toEqual(Array.from({ length: 50 }, (_, i) => [200, `n${i}`]));
        await k.moreRequests?.(base);

        // Compiled with the http library at Create (the shim while runc made the container; the daemon once).
        expect(fileText(log)).toContain("(from the compile cache)");
        // The guest's stdout and stderr reach the container's log.
        expect(await (await fetch(`${base}/log`)).text()).toBe("logged\n");
        expect(await waitFile(log, (t) => t.includes("guest says hello on stdout") && t.includes("guest says hello on stderr"))).toBe(true);
        k.guestLogged?.();

        stopped = true;
        expect(await stop(id)).toBe(0);
      } finally {
        if (!stopped) await stop(id, "SIGKILL").catch(() => 0);
      }
      await check();
    },
    timeoutMs,
  );

  test(
    name("a trapping handler answers 500 (trap in the container log) and the service keeps serving"),
    async () => {
      const id = k.uid("trap");
      const { base, log } = await serve(id);
      try {
        const r = await fetch(`${base}/trap`);
        expect(r.status).toBe(500);
        await r.text();
        for (let i = 0; i < 3; i++) {
          const ok = await fetch(`${base}/`);
          expect(ok.status).toBe(200);
          expect(await ok.text()).toBe(HELLO);
        }
        expect(await waitFile(log, (t) => t.includes("wasm `unreachable` instruction executed"))).toBe(true);
      } finally {
        expect(await stop(id)).toBe(0);
      }
    },
    timeoutMs,
  );

  test(
    name("SIGTERM during a request: the request completes, new connections are refused, then exit 0"),
    async () => {
      const id = k.uid("grace");
      const { base, log } = await serve(id);
      const slow = fetch(`${base}/sleep/2000`).then(async (r) => [r.status, await r.text()]);
      // The guest says so on stderr before it waits.
      expect(await waitFile(log, (t) => t.includes("guest sleeping"), 20_000)).toBe(true);
      await ctrOk(["task", "kill", id]);
      // Once the stop is under way the listener is closed.
      expect(await refusedSoon(base)).toBe(true);
      expect(await slow).toEqual([200, "slept 2000\n"]);
      await waitStatus(id, "STOPPED", 45_000);
      expect(await deleteTask(id)).toBe(0);
      await ctrOk(["containers", "rm", id]);
    },
    timeoutMs,
  );

  test(
    name(k.secondSignal.title),
    async () => {
      const check = nothingLeft();
      const id = k.uid("second");
      // A grace period of ten minutes: only the second signal can end this drain within the test.
      const { base, log } = await serve(id, { extra: ["--env", "BUNWASI_HTTP_GRACE_MS=600000"] });
      const asleep = fetch(`${base}/sleep/600000`).then(
        (r) => `answered ${r.status}`,
        () => "cut",
      );
      expect(await waitFile(log, (t) => t.includes("guest sleeping"), 20_000)).toBe(true);
      await ctrOk(["task", "kill", id]);
      // The executor says when the drain is under way, and what a second signal does.
      expect(await waitFile(log, (t) => t.includes(k.secondSignal.draining), 20_000)).toBe(true);
      expect(await stop(id, "SIGINT")).toBe(130);
      expect(fileText(log)).toContain(k.secondSignal.cut);
      expect(await asleep).toBe("cut");
      await check();
    },
    timeoutMs,
  );
}
