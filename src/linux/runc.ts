// The OCI runtime binary (runc, or crun) driven as a command: it gives every container
// its namespaces, cgroup, mounts and security settings, so we never fork ourselves.
// Every call spawns asynchronously: a runtime that takes seconds over one container must not
// stall the calls of others. Its output goes to in-memory files, not pipes, and its small
// files are read synchronously: pipes and asynchronous file I/O would start Bun's thread
// pool, two threads whose heaps the server keeps for its whole life (about 0.3 MiB).

import { closeSync, readFileSync } from "node:fs";
import { memfd as newMemfd, readAll } from "./memfd.ts";

export interface RuncOptions {
  /** The runtime binary: runc by default, crun when configured or found. */
  binary: string;
  /** Its state root, one per namespace as containerd's runc shim keeps it. */
  root: string;
  /** runc --systemd-cgroup: cgroupsPath is "slice:prefix:name", made through systemd (the kubelet's systemd driver). */
  systemdCgroup?: boolean;
}

export class RuncError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number,
    readonly detail: string,
  ) {
    super(`${command}: ${detail || `exit status ${exitCode}`}`);
  }
}

export function findRuntime(preferred?: string): string {
  if (preferred) return preferred;
  for (const name of ["runc", "crun"]) {
    const found = Bun.which(name, { PATH: `${process.env.PATH ?? ""}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` });
    if (found) return found;
  }
  return "runc";
}

// The runc of a container under runc, in both modes: src/runtime-v2/runc-instance.ts drives it
// (and `shim delete` after a server died, src/runtime-v2/delete.ts).
export class Runc {
  constructor(private readonly opts: RuncOptions) {}

  get root(): string {
    return this.opts.root;
  }

  /**
   * Creates the container; its init waits for `start`. stdio fds go to the init process; with
   * a console socket the runtime sends the terminal it makes there instead.
   */
  async create(
    id: string,
    bundle: string,
    pidFile: string,
    stdio: [number, number, number] | null,
    logFile: string,
    consoleSocket?: string,
  ): Promise<number> {
    const console = consoleSocket ? ["--console-socket", consoleSocket] : [];
    await this.run(["create", "--bundle", bundle, "--pid-file", pidFile, ...console, id], { stdio: stdio ?? undefined, logFile });
    return readPid(pidFile);
  }

  /**
   * `exec --detach`: the process runs in the container's namespaces and cgroup; the runtime
   * exits once it runs (the process is then reparented to us, the subreaper).
   */
  async exec(
    id: string,
    processFile: string,
    pidFile: string,
    stdio: [number, number, number] | null,
    logFile: string,
    consoleSocket?: string,
  ): Promise<number> {
    const console = consoleSocket ? ["--console-socket", consoleSocket] : [];
    await this.run(["exec", "--detach", "--process", processFile, "--pid-file", pidFile, ...console, id], {
      stdio: stdio ?? undefined,
      logFile,
    });
    return readPid(pidFile);
  }

  start(id: string): Promise<void> {
    return this.run(["start", id]);
  }

  kill(id: string, signal: number, all: boolean): Promise<void> {
    return this.run(all ? ["kill", "--all", id, String(signal)] : ["kill", id, String(signal)]);
  }

  delete(id: string, force: boolean): Promise<void> {
    return this.run(force ? ["delete", "--force", id] : ["delete", id]);
  }

  pause(id: string): Promise<void> {
    return this.run(["pause", id]);
  }

  resume(id: string): Promise<void> {
    return this.run(["resume", id]);
  }

  async ps(id: string): Promise<number[]> {
    const out = await this.output(["ps", "--format", "json", id]);
    const pids = JSON.parse(out || "[]");
    return Array.isArray(pids) ? pids.map(Number) : [];
  }

  /** The runtime's own view: status and the container's cgroup stats. */
  async stats(id: string): Promise<RuncStats> {
    const out = await this.output(["events", "--stats", id]);
    return JSON.parse(out).data as RuncStats;
  }

  /** `runc update --resources -`: the LinuxResources JSON goes on stdin, as runc-v2 passes it. */
  async update(id: string, resources: string): Promise<void> {
    await this.spawn(["update", "--resources", "-", id], { stdin: new TextEncoder().encode(resources) });
  }

  private async output(args: string[]): Promise<string> {
    return (await this.spawn(args, { stdout: true })).out;
  }

  private async run(args: string[], o: { stdio?: [number, number, number]; logFile?: string } = {}): Promise<void> {
    // With container stdio, runc's stderr is the container's: its own errors go to the log.
    await this.spawn(args, { stdio: o.stdio, logFile: o.logFile });
  }

  /** Runs the runtime; throws a RuncError with its last error line when it fails. */
  private async spawn(
    args: string[],
    o: { stdio?: [number, number, number]; logFile?: string; stdin?: Uint8Array; stdout?: boolean },
  ): Promise<{ out: string }> {
    const files: number[] = [];
    const memfd = (name: string, data?: Uint8Array): number => {
      const fd = newMemfd(`${this.name}-${name}`, data);
      files.push(fd);
      return fd;
    };
    try {
      const stdin = o.stdio?.[0] ?? (o.stdin ? memfd("stdin", o.stdin) : "ignore");
      const stdout = o.stdio?.[1] ?? (o.stdout ? memfd("stdout") : "ignore");
      const stderr = o.stdio?.[2] ?? memfd("stderr");
      const logArgs = o.logFile ? ["--log", o.logFile, "--log-format", "json"] : [];
      const proc = Bun.spawn([this.opts.binary, ...this.globalArgs, ...logArgs, ...args], { stdin, stdout, stderr });
      const code = await proc.exited;
      const out = typeof stdout === "number" && o.stdout ? readAll(stdout) : "";
      if (code === 0) return { out };
      const err = typeof stderr === "number" && !o.stdio ? readAll(stderr) : "";
      const detail = (o.logFile ? lastLogError(o.logFile) : "") || lastLine(err);
      throw new RuncError(`${this.name} ${args[0]}`, code, detail);
    } finally {
      for (const fd of files) closeSync(fd);
    }
  }

  /** The flags every command gets: the state root, and the cgroup driver when it is systemd. */
  private get globalArgs(): string[] {
    return ["--root", this.opts.root, ...(this.opts.systemdCgroup ? ["--systemd-cgroup"] : [])];
  }

  private get name(): string {
    return this.opts.binary.slice(this.opts.binary.lastIndexOf("/") + 1);
  }
}

/** runc's types/events.go MemoryEntry (cgroup v1: usage, memsw, kmem). */
export interface RuncMemoryEntry {
  usage?: number;
  limit?: number;
  max?: number;
  failcnt?: number;
}

export interface RuncStats {
  cpu?: {
    usage?: { total?: number; kernel?: number; user?: number; percpu?: number[] };
    // runc's own names (libcontainer/types: throttledPeriods, throttledTime), not the kernel's or containerd's.
    throttling?: { periods?: number; throttledPeriods?: number; throttledTime?: number };
  };
  memory?: {
    usage?: RuncMemoryEntry;
    swap?: RuncMemoryEntry;
    kernel?: RuncMemoryEntry;
    raw?: Record<string, number>;
  };
  pids?: { current?: number; limit?: number };
  blkio?: Record<string, unknown>;
  /**
   * Not runc's: the memory cgroup's count of OOM kills (oom_kill of memory.oom_control or
   * memory.events), which `runc events --stats` leaves out and runc-v2 reports; the
   * container's instance adds it (./oom.ts).
   */
  oomKills?: number;
}

function readPid(pidFile: string): number {
  return Number(readFileSync(pidFile, "utf8").trim());
}

function lastLine(text: string): string {
  const lines = text.trim().split("\n").filter(Boolean);
  return lines[lines.length - 1] ?? "";
}

/** runc's JSON log: the last "error" level message is the reason it failed. */
function lastLogError(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return ""; // no log written: the caller falls back to stderr
  }
  let msg = "";
  for (const line of text.split("\n")) {
    try {
      const rec = JSON.parse(line);
      if (rec.level === "error" && rec.msg) msg = rec.msg;
    } catch {} // a line runc cut short, or not JSON: not the message we look for
  }
  return msg;
}
