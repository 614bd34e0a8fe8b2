// containerd-shim-wasmtimed-v1: the shim containerd runs for io.containerd.wasmtimed.v1.
// It serves nothing itself: `start` asks the daemon (containerd-wasmtimed) for the pod's
// sandbox and prints its address the way the calling containerd expects; `delete` asks
// the daemon to delete the container, and cleans up on its own what a dead daemon left
// (runc containers, the rootfs mount, the state directory), since containerd runs it
// precisely when the shim's socket died.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { SHIM_VERSION } from "../common/constants.ts";
import { groupId, writeAddressFile } from "../runtime-v2/address.ts";
import { parseShimFlags, type ShimFlags } from "../runtime-v2/flags.ts";
import { bootstrapParams, startReply } from "../runtime-v2/reply.ts";
import { Client, type ServiceClient } from "../ttrpc/index.ts";
import { ManagerDefinition } from "./gen/bunwasi/manager/v1/manager.ts";
import { DAEMON_SOCKET_ENV, daemonSocket, type SharedModeNames } from "./paths.ts";

/** How long `start` tries to reach the daemon: containerd waits on us, a dead daemon must fail fast. */
export const DAEMON_CONNECT_TIMEOUT_MS = 1000;

type Env = Record<string, string | undefined>;

export class DaemonUnreachable extends Error {
  override name = "DaemonUnreachable";
  constructor(daemon: string, socket: string, cause: string) {
    super(
      `cannot reach ${daemon} at ${socket} (${cause}): start ${daemon} ` +
        `(e.g. systemctl start ${daemon}), or set ${DAEMON_SOCKET_ENV} in containerd's environment to its --socket`,
    );
  }
}

async function connect(daemon: string, socket: string): Promise<{ client: Client; manager: ServiceClient<typeof ManagerDefinition> }> {
  if (!existsSync(socket)) throw new DaemonUnreachable(daemon, socket, "no such socket");
  let client: Client;
  try {
    client = await Client.connect(socket, { timeoutMs: DAEMON_CONNECT_TIMEOUT_MS });
  } catch (e) {
    throw new DaemonUnreachable(daemon, socket, e instanceof Error ? e.message : String(e));
  }
  return { client, manager: client.service(ManagerDefinition) };
}

function annotations(bundle: string): Record<string, string> | undefined {
  try {
    return JSON.parse(readFileSync(join(bundle, "config.json"), "utf8")).annotations;
  } catch {
    return undefined; // the daemon's Create reports a config.json that does not parse
  }
}

/** `start`: the sandbox's address, in the form this containerd reads. */
export async function thinStart(
  names: SharedModeNames,
  flags: ShimFlags,
  stdin: Uint8Array,
  env: Env = process.env,
): Promise<string | Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  if (!existsSync(join(bundle, "config.json"))) {
    throw new Error(`start: ${bundle} is not a bundle (no config.json); containerd runs start in the bundle directory`);
  }
  const params = bootstrapParams(stdin, flags);
  const { client, manager } = await connect(names.daemon, daemonSocket(names.daemon, env));
  try {
    const { address } = await manager.createSandbox(
      {
        id: groupId(flags.id, annotations(bundle)),
        namespace: flags.namespace,
        bundle,
        containerdAddress: flags.address,
        ttrpcAddress: params?.containerdTtrpcAddress || env.TTRPC_ADDRESS || `${flags.address}.ttrpc`,
        containerId: flags.id,
      },
      { timeoutMs: 10_000 },
    );
    writeAddressFile(bundle, address);
    return startReply(address, params, env);
  } finally {
    client.close();
  }
}

/**
 * `delete`: the daemon deletes the container if it has it; whatever is left on the host
 * (the daemon is gone, never had it, or could not clean all of it up) is cleaned up here
 * from the bundle and state dir. As normal mode's `shim delete`, it always answers: with the
 * exit the daemon saw when it had the container, every failure said on stderr (containerd's log).
 */
export async function thinDelete(
  names: SharedModeNames,
  flags: ShimFlags,
  env: Env = process.env,
  warn: (m: string) => void = (m) => process.stderr.write(`${m}\n`),
): Promise<Uint8Array> {
  // Imported here, not at the top: `start` runs for every pod and needs neither.
  const [{ deleteTask, killedResponse }, { DeleteResponse }] = await Promise.all([
    import("../runtime-v2/delete.ts"),
    import("../task/gen/containerd/runtime/task/v2/shim.ts"),
  ]);
  let answer: Uint8Array | undefined;
  try {
    const { client, manager } = await connect(names.daemon, daemonSocket(names.daemon, env));
    try {
      const r = await manager.deleteSandbox(
        { containerId: flags.id, namespace: flags.namespace, bundle: flags.bundle || process.cwd() },
        { timeoutMs: 10_000 },
      );
      // The daemon has let go of the container either way; the host steps left are retried below.
      if (r.cleanupError) warn(`daemon delete: could not clean up: ${r.cleanupError}; cleaning up locally`);
      if (r.found) {
        answer = DeleteResponse.encode({
          pid: r.pid,
          exitStatus: r.exitStatus,
          exitedAt: { seconds: r.exitedAtSeconds, nanos: r.exitedAtNanos },
        }).finish();
      }
    } finally {
      client.close();
    }
  } catch (e) {
    warn(`daemon delete: ${e instanceof Error ? e.message : String(e)}; cleaning up locally`);
  }
  // Idempotent: after the daemon's Delete there is nothing left to find. Never fails the
  // delete: containerd needs the answer (the exit) whatever could not be cleaned up.
  const local = await deleteTask(flags, warn).catch((e) => {
    warn(`local clean-up: ${e instanceof Error ? e.message : String(e)}`);
    return undefined;
  });
  return answer ?? local ?? killedResponse();
}

export async function thinShimMain(names: SharedModeNames, argv: string[]): Promise<void> {
  const { thinShim: binaryName, runtime } = names;
  let flags: ShimFlags;
  try {
    flags = parseShimFlags(argv);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(2);
  }
  const action = flags.rest[0];
  const stdin = async () => (process.stdin.isTTY ? new Uint8Array() : new Uint8Array(await Bun.stdin.arrayBuffer()));
  switch (action) {
    case "start":
      process.stdout.write(await thinStart(names, flags, await stdin()));
      return;
    case "delete":
      process.stdout.write(await thinDelete(names, flags));
      return;
    case "v":
    case "version":
      process.stdout.write(`${binaryName} (${SHIM_VERSION})\n`);
      return;
    case "info": {
      await stdin();
      const { runtimeInfo } = await import("../runtime-v2/info.ts");
      process.stdout.write(await runtimeInfo(runtime));
      return;
    }
    default:
      process.stderr.write(
        `usage: ${binaryName} [flags] start|delete\n` +
          `containerd's thin shim for ${runtime}: sandboxes are served by ${names.daemon} (${daemonSocket(names.daemon)})\n`,
      );
      process.exit(action === "help" || action === "--help" ? 0 : 2);
  }
}
