// The daemon's ptys (src/linux/pty.ts) never become its controlling terminal: a session leader
// without one (the daemon under systemd) that opens a terminal without O_NOCTTY takes it as
// one, and the engine reopens a module's output by path without it. Run as a session leader
// (setsid): bare, the pty's slave becomes the controlling terminal (the danger); through
// openPty, the session already holds a terminal of its own and keeps it.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";

const FIXTURE = join(import.meta.dir, "fixtures/pty-session.ts");

function inNewSession(...args: string[]): { before: number; after: number; slave: number } {
  const r = Bun.spawnSync(["setsid", "-w", process.execPath, FIXTURE, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`fixture: ${r.stderr}`);
  return JSON.parse(r.stdout.toString());
}

describe("openPty in a session leader with no controlling terminal", () => {
  test("bare: reopening a pty's slave by path makes it the session's controlling terminal", () => {
    const r = inNewSession("bare");
    expect(r.before).toBe(0);
    expect(r.after).toBe(r.slave);
  });

  test("through openPty: the session holds a terminal of its own first, and no pty of a container becomes it", () => {
    const r = inNewSession();
    expect(r.before).not.toBe(0);
    expect(r.before).not.toBe(r.slave);
    expect(r.after).toBe(r.before);
  });
});
