// The manager service (proto/bunwasi/manager/v1/manager.proto): the daemon's table of
// sandboxes. The thin shim asks it for a pod's sandbox on `start` and to delete a
// container on `delete`; every other call containerd makes goes to the sandbox itself.
// Across a hand-over (./generations.ts) the serving daemon answers for a pod a draining one
// still has with that one's sandbox, and forwards a `delete` it cannot do; a daemon that has
// handed over makes no sandbox and forwards every new pod's to the serving daemon.

import { stat } from "node:fs/promises";
import { isAbsolute, join, normalize } from "node:path";
import { VALID_ID } from "../common/identifiers.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import type {
  CreateSandboxRequest,
  CreateSandboxResponse,
  DeleteSandboxRequest,
  DeleteSandboxResponse,
  HandOverRequest,
  HandOverResponse,
  ListSandboxesResponse,
} from "./gen/bunwasi/manager/v1/manager.ts";
import type { Generations } from "./generations.ts";
import { Sandbox } from "./sandbox.ts";
import type { DaemonShared } from "./sandbox-host.ts";

export interface ManagerOptions {
  shared: DaemonShared;
  /** Where sandbox sockets go (one file per sandbox) and the other daemons of the directory are. */
  generations: Generations;
  /** A successor asks this daemon to hand over (the daemon lets go of its lock); its answer. */
  onHandOver?: (successor: number) => Promise<HandOverResponse>;
  /** Modules compiled so far (./compiles.ts). */
  compiled: () => number;
  running: () => number;
  /** The daemon binary's name, for messages. */
  daemonName: string;
  /** A sandbox has closed (the daemon gives memory back once such ends quiet down). */
  onSandboxClosed?: () => void;
  /**
   * Before a new sandbox is made here: a daemon at its fd budget starts a successor and
   * returns a promise that resolves once that took over or failed (./overflow.ts); one that
   * handed over already (handingOver) starts none and returns undefined.
   */
  beforeNewSandbox?: () => Promise<void> | undefined;
}

export class Manager {
  readonly sandboxes = new Map<string, Sandbox>();
  private stopping = false;
  /** Resolves once the successor serves the manager socket (set when handing over). */
  private successorServes: Promise<void> | null = null;

  constructor(private readonly o: ManagerOptions) {}

  /** A daemon that handed over: it serves the sandboxes it has, new pods go to the successor. */
  get handingOver(): boolean {
    return this.successorServes !== null;
  }

  /**
   * From now on no sandbox is made here: a pod this daemon does not have is the successor's,
   * asked for once `serves` resolves (the successor took the manager socket).
   */
  startHandingOver(serves: Promise<void>): void {
    this.successorServes = serves;
  }

  async handOver(req: HandOverRequest): Promise<HandOverResponse> {
    if (this.stopping || this.handingOver || !this.o.onHandOver) {
      throw new TtrpcError(Code.FAILED_PRECONDITION, `${this.o.daemonName} is ${this.stopping ? "stopping" : "handing over already"}`);
    }
    return this.o.onHandOver(req.pid);
  }

  get draining(): boolean {
    return this.stopping;
  }

  /** From now on no sandbox is made (the daemon is stopping). */
  drain(): void {
    this.stopping = true;
  }

  async createSandbox(req: CreateSandboxRequest): Promise<CreateSandboxResponse> {
    if (this.stopping) throw new TtrpcError(Code.UNAVAILABLE, `${this.o.daemonName} is shutting down: no new sandboxes`);
    checkId("sandbox id", req.id);
    checkId("namespace", req.namespace);
    if (req.containerId) checkId("container id", req.containerId);
    await checkBundle(req.bundle, req.sandboxBundle ? "directory" : "config");
    if (!req.ttrpcAddress) throw new TtrpcError(Code.INVALID_ARGUMENT, "ttrpc_address is required (containerd's ttrpc socket, for events)");
    // Two containerds on one host may both have a pod of that name: their address is part of the key.
    const key = `${req.containerdAddress}|${req.namespace}/${req.id}`;
    let sb = this.sandboxes.get(key);
    // A sandbox on its way out is not handed out again: wait for it and make a new one.
    if (sb?.closed) {
      await sb.close();
      sb = undefined;
    }
    if (sb && req.containerId && (await sb.has(req.namespace, req.containerId))) {
      throw new TtrpcError(Code.ALREADY_EXISTS, `container ${req.containerId} already exists in sandbox ${key}`);
    }
    if (sb) return { address: sb.address };
    const g = this.o.generations;
    const hash = new Bun.CryptoHasher("sha256").update(key).digest("hex").slice(0, 24);
    // A pod started before a hand-over stays where it runs.
    const foreign = await g.foreignSandbox(hash);
    if (foreign) {
      this.o.shared.log(`sandbox ${key} is a draining daemon's: ${foreign}`, "debug");
      return { address: foreign };
    }
    // At the fd budget: wait for the successor to take over, then ask it.
    const overflow = this.o.beforeNewSandbox?.();
    if (overflow) await overflow;
    if (this.successorServes) {
      await this.successorServes;
      return g.createAtServing(req);
    }
    if (this.stopping) throw new TtrpcError(Code.UNAVAILABLE, `${this.o.daemonName} is shutting down: no new sandboxes`);
    // Asked twice at once while the lookups above awaited: one sandbox.
    sb = this.sandboxes.get(key);
    if (!sb) {
      const socket = g.sandboxSocket(hash);
      const opts = {
        id: req.id,
        namespace: req.namespace,
        socket,
        ttrpcAddress: req.ttrpcAddress,
        containerdAddress: req.containerdAddress,
      };
      sb = new Sandbox(opts, this.o.shared, (s) => {
        if (this.sandboxes.get(key) === s) this.sandboxes.delete(key);
        this.o.shared.log(`sandbox ${key} closed`);
        this.o.onSandboxClosed?.();
      });
      this.sandboxes.set(key, sb);
      this.o.shared.log(`sandbox ${key} serving ${sb.address}`);
    }
    return { address: sb.address };
  }

  async deleteSandbox(req: DeleteSandboxRequest): Promise<DeleteSandboxResponse> {
    checkId("container id", req.containerId);
    checkId("namespace", req.namespace);
    if (req.bundle) await checkBundle(req.bundle, "path");
    const found = await this.deleteHere(req);
    if (found || this.handingOver) return found ?? NOT_FOUND;
    // Not here: a draining daemon's (one that handed over to this one) perhaps.
    return (await this.o.generations.deleteElsewhere(req, (m) => this.o.shared.log(m, "warning"))) ?? NOT_FOUND;
  }

  private async deleteHere(req: DeleteSandboxRequest): Promise<DeleteSandboxResponse | undefined> {
    for (const sb of this.sandboxes.values()) {
      if (!(await sb.has(req.namespace, req.containerId))) continue;
      const r = await sb.deleteContainer(req.namespace, req.containerId);
      const at = r.exitedAt ?? { seconds: 0, nanos: 0 };
      return {
        found: true,
        pid: r.pid,
        exitStatus: r.exitStatus,
        exitedAtSeconds: Number(at.seconds),
        exitedAtNanos: at.nanos,
        cleanupError: r.failed.join("; "),
      };
    }
    return undefined;
  }

  async listSandboxes(): Promise<ListSandboxesResponse> {
    return {
      sandboxes: [...this.sandboxes.values()].map((s) => ({
        id: s.o.id,
        namespace: s.o.namespace,
        address: s.address,
        containers: s.containers,
      })),
      modulesCompiled: this.o.compiled(),
      wasmRunning: this.o.running(),
    };
  }
}

const NOT_FOUND: DeleteSandboxResponse = { found: false, pid: 0, exitStatus: 0, exitedAtSeconds: 0, exitedAtNanos: 0, cleanupError: "" };

function checkId(what: string, id: string): void {
  if (!VALID_ID.test(id))
    throw new TtrpcError(Code.INVALID_ARGUMENT, `${what} ${JSON.stringify(id)} is not valid (containerd's identifier rule)`);
}

/**
 * Off the daemon's thread (every pod's start asks): the stat calls are asynchronous. `need`:
 * a container's bundle (with config.json), a sandbox's (a directory: containerd's shim
 * sandboxer writes no spec), or only a well-formed path (a delete's, which may be gone).
 */
async function checkBundle(bundle: string, need: "config" | "directory" | "path"): Promise<void> {
  if (!bundle || !isAbsolute(bundle) || normalize(bundle) !== bundle.replace(/\/+$/, "")) {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `bundle ${JSON.stringify(bundle)} must be an absolute, normalized path`);
  }
  if (need === "path") return;
  const [dir, config] = await Promise.all([
    stat(bundle).catch(() => null),
    need === "config" ? stat(join(bundle, "config.json")).catch(() => null) : true,
  ]);
  if (!dir?.isDirectory() || !config) {
    throw new TtrpcError(
      Code.INVALID_ARGUMENT,
      `bundle ${bundle} is not a bundle directory${need === "config" ? " (no config.json)" : ""}`,
    );
  }
}
