// A terminal process's console as the Task service holds it between its runtime's create (or
// exec) and the Terminal that copies it (./terminal.ts): the runtime hands over the pty master
// it made either through a console socket (an OCI runtime, src/linux/console.ts; made only if
// the runtime asks for its path) or directly (a runtime in this process). Either way the
// service gets one master and one Terminal, the same in both modes.

import { ConsoleSocket } from "../linux/console.ts";
import { close } from "../linux/libc.ts";
import type { ProcessConsole } from "./instance.ts";

export interface ReceivedMaster {
  master: number;
  onHangup?: () => void;
}

export class ConsoleHandover implements ProcessConsole {
  private socket: ConsoleSocket | null = null;
  private handed: ReceivedMaster | null = null;
  private closed = false;

  socketPath(): string {
    if (this.closed) throw new Error("console closed");
    this.socket ??= ConsoleSocket.open();
    return this.socket.path;
  }

  handOver(master: number, onHangup?: () => void): void {
    if (this.closed || this.handed) {
      close(master);
      throw new Error(this.closed ? "console closed" : "the runtime handed over a second terminal");
    }
    this.handed = { master, ...(onHangup ? { onHangup } : {}) };
  }

  /**
   * The master the runtime made, ours to close: handed over, or sent to the socket within
   * `timeoutMs`. Throws if the runtime made none.
   */
  async receive(timeoutMs: number): Promise<ReceivedMaster> {
    const handed = this.handed;
    this.handed = null;
    if (handed) return handed;
    if (this.socket) return { master: await this.socket.receiveMaster(timeoutMs) };
    throw new Error("the runtime made no terminal for the process");
  }

  /** The socket goes; a master handed over and never received is closed. Safe to call twice. */
  async close(): Promise<void> {
    this.closed = true;
    await this.socket?.close();
    if (this.handed) close(this.handed.master);
    this.handed = null;
  }
}
