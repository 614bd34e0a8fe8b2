// Where a terminal process's runtime hands over its pty master (src/task/console.ts): directly
// (the shared-mode daemon) or through the console socket (runc; made only when the runtime asks
// for its path), one master either way; a master handed over and never received is closed; and
// the Terminal calls the hand-over's hangup as its master closes (src/task/terminal.ts).

import { describe, expect, test } from "bun:test";
import { closeSync, existsSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { openPty } from "../../../src/linux/pty.ts";
import { ConsoleHandover } from "../../../src/task/console.ts";
import { Terminal } from "../../../src/task/terminal.ts";
import { until } from "../../support/until.ts";

/** A terminal whose output and input go nowhere (the pump's own paths are not what these test). */
const NO_PATHS = { stdin: "", stdout: "", stderr: "" };

/** What a write to the process's side of a pty gives: "ok", or the error's code (EIO once hung up). */
function writeSlave(slave: number): string {
  try {
    writeSync(slave, "x");
    return "ok";
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

describe("ConsoleHandover", () => {
  test("a master handed over is received as it is, with its hangup; the console's close leaves it open; no socket is made", async () => {
    const c = new ConsoleHandover();
    const { master, slave } = openPty();
    const hangup = () => {};
    c.handOver(master, hangup);
    expect(await c.receive(1000)).toEqual({ master, onHangup: hangup });
    await c.close();
    // Received: ours (the Terminal's) to close, not the console's.
    expect(writeSlave(slave)).toBe("ok");
    const t = await Terminal.attach(master, NO_PATHS);
    await t.close();
    // The master's last reference goes once Bun has let go of its reader too.
    await until("the slave hung up", () => writeSlave(slave) === "EIO");
    closeSync(slave);
  });

  test("a master handed over and never received is closed with the console; a second one is refused and closed", async () => {
    const c = new ConsoleHandover();
    const a = openPty();
    const b = openPty();
    c.handOver(a.master);
    expect(() => c.handOver(b.master)).toThrow("the runtime handed over a second terminal");
    expect(writeSlave(b.slave)).toBe("EIO");
    expect(writeSlave(a.slave)).toBe("ok");
    await c.close();
    expect(writeSlave(a.slave)).toBe("EIO");
    closeSync(a.slave);
    closeSync(b.slave);
  });

  test("the socket is made only when the runtime asks for its path, and goes with the console", async () => {
    const c = new ConsoleHandover();
    await expect(c.receive(10)).rejects.toThrow("the runtime made no terminal for the process");
    const path = c.socketPath();
    expect(existsSync(path)).toBe(true);
    expect(c.socketPath()).toBe(path);
    await c.close();
    expect(existsSync(dirname(path))).toBe(false);
    expect(() => c.socketPath()).toThrow("console closed");
  });
});

describe("Terminal's hangup", () => {
  test("close() calls the hand-over's hangup before the master goes (the process meets the signal, not the EOF)", async () => {
    const { master, slave } = openPty();
    let atHangup: string | undefined;
    const t = await Terminal.attach(master, NO_PATHS, () => {
      atHangup = writeSlave(slave);
    });
    await t.close();
    expect(atHangup).toBe("ok");
    await until("the slave hung up", () => writeSlave(slave) === "EIO");
    closeSync(slave);
  });
});
