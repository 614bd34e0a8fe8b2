// containerd-shim-wasmtimed-v1: the shim containerd runs for io.containerd.wasmtimed.v1.
// It serves nothing itself: `start` asks the daemon (containerd-wasmtimed) for the pod's
// sandbox, whose address the command line (../runtime-v2/shim-cli.ts, the same as a
// normal-mode shim's) prints the way the calling containerd expects; `delete` asks
// the daemon to delete the container, and cleans up on its own what a dead daemon left
// (runc containers, the rootfs mount, the state directory), since containerd runs it
// precisely when the shim's socket died.

import { existsSync } from "node:fs";
import { join } from "node:path";
import type { ShimFlags } from "../runtime-v2/flags.ts";
import type { OciFeatures } from "../runtime-v2/info.ts";
import { type StartContext, shimCliMain } from "../runtime-v2/shim-cli.ts";
import type { Client, ServiceClient } from "../ttrpc/index.ts";
import { daemonsDir, liveDaemons, noDaemonLives } from "./daemon-files.ts";
import type { ManagerDefinition } from "./gen/bunwasi/manager/v1/manager.ts";
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
  // Loaded here, not at the top: a `delete` after a crash finds no daemon and needs neither.
  const [{ Client }, { ManagerDefinition }] = await Promise.all([
    import("../ttrpc/index.ts"),
    import("./gen/bunwasi/manager/v1/manager.ts"),
  ]);
  let client: Client;
  try {
    client = await Client.connect(socket, { timeoutMs: DAEMON_CONNECT_TIMEOUT_MS });
  } catch (e) {
    throw new DaemonUnreachable(daemon, socket, e instanceof Error ? e.message : String(e));
  }
  return { client, manager: client.service(ManagerDefinition) };
}

/** `start`: the sandbox's address (the command line prints it in the form this containerd reads). */
export async function thinStart(names: SharedModeNames, ctx: StartContext, env: Env = process.env): Promise<string> {
  const { client, manager } = await connect(names.daemon, daemonSocket(names.daemon, env));
  try {
    const { address } = await manager.createSandbox(
      {
        id: ctx.group,
        namespace: ctx.flags.namespace,
        bundle: ctx.bundle,
        containerdAddress: ctx.flags.address,
        ttrpcAddress: ctx.ttrpcAddress,
        // A sandbox's start (containerd's shim sandboxer) names the pod, not a container.
        containerId: ctx.sandbox ? "" : ctx.flags.id,
        sandboxBundle: ctx.sandbox,
      },
      { timeoutMs: 10_000 },
    );
    return address;
  } finally {
    client.close();
  }
}

/**
 * `delete`: the daemon deletes the container if it has it; whatever is left on the host
 * (the daemon is gone, never had it, or could not clean all of it up) is cleaned up here
 * from the bundle and state dir. As normal mode's `shim delete`, it always answers: with the
 * exit the daemon saw when it had the container, every failure said on stderr (containerd's log).
 *
 * After a crash of the daemon containerd runs this for every container at once, and gives each
 * 5 s (io.containerd.timeout.shim.cleanup) before it kills it and records the exit as 255,
 * leaving what it would have cleaned: so when no daemon of the directory lives, it asks none
 * and loads no client, only the clean-up (docs/ARCHITECTURE.md, "What a crash costs").
 */
export async function thinDelete(
  names: SharedModeNames,
  flags: ShimFlags,
  env: Env = process.env,
  warn: (m: string) => void = (m) => process.stderr.write(`${m}\n`),
): Promise<Uint8Array> {
  // Imported here, not at the top: `start` runs for every pod and needs none of it.
  const { cleanUpLeftovers, deleteResponse, killedResponse } = await import("../runtime-v2/delete.ts");
  const { shimPaths } = await import("../runtime-v2/paths.ts");
  const socket = daemonSocket(names.daemon, env);
  const bundle = flags.bundle || process.cwd();
  let answer: Uint8Array | undefined;
  if (noDaemonLives(socket)) warn(`daemon delete: no ${names.daemon} of ${socket} lives; cleaning up locally`);
  else {
    const req = { containerId: flags.id, namespace: flags.namespace, bundle };
    // The serving daemon (which asks the draining ones itself); if it cannot be reached, each
    // other live daemon at its own socket: a draining daemon whose successor died no longer
    // listens at the path, but still has its containers.
    const sockets = [socket, ...liveDaemons(socket).map((pid) => join(daemonsDir(socket), `${pid}.sock`))];
    for (const at of sockets) {
      try {
        const { client, manager } = await connect(names.daemon, at);
        try {
          const r = await manager.deleteSandbox(req, { timeoutMs: 10_000 });
          // The daemon has let go of the container either way; the host steps left are retried below.
          if (r.cleanupError) warn(`daemon delete: could not clean up: ${r.cleanupError}; cleaning up locally`);
          if (r.found) {
            const exitedAt = { seconds: r.exitedAtSeconds, nanos: r.exitedAtNanos };
            answer = deleteResponse({ pid: r.pid, exitStatus: r.exitStatus, exitedAt });
          }
        } finally {
          client.close();
        }
        if (answer || at === socket) break;
      } catch (e) {
        if (at === socket) warn(`daemon delete: ${e instanceof Error ? e.message : String(e)}; cleaning up locally`);
      }
    }
  }
  // Idempotent: after the daemon's Delete there is nothing left to find. Never fails the
  // delete: containerd needs the answer (the exit) whatever could not be cleaned up.
  await cleanUpLeftovers({ namespace: flags.namespace, id: flags.id, bundle }, shimPaths(process.env).stateRoot, warn).catch((e) =>
    warn(`local clean-up: ${e instanceof Error ? e.message : String(e)}`),
  );
  return answer ?? killedResponse();
}

/**
 * What shared mode honours of runc's features. Native containers run under runc as in normal
 * mode. A wasm container runs on a thread of the daemon: its mounts reach the module only as
 * its WASI view, one non-recursive read-only bind per read-only volume ("ro" or "rro", so
 * nothing mounted under it is visible, let alone writable: src/oci/wasi-view.ts), which keeps
 * recursive read-only mounts; but the thread enters no user namespace of the container's
 * (only its network namespace), so "user" is not among the namespaces (the CRI plugin offers
 * user namespaces, `hostUsers: false`, only to a handler that lists it).
 */
export function sharedModeFeatures(runtime: OciFeatures): OciFeatures {
  if (!runtime.linux?.namespaces) return runtime;
  return { ...runtime, linux: { ...runtime.linux, namespaces: runtime.linux.namespaces.filter((n) => n !== "user") } };
}

/** The thin shim's command line (../runtime-v2/shim-cli.ts), as containerd runs it. */
export function thinShimMain(names: SharedModeNames, argv: string[]): Promise<never> {
  return shimCliMain(
    {
      binaryName: names.thinShim,
      runtime: names.runtime,
      description: `containerd's thin shim for ${names.runtime}: sandboxes are served by ${names.daemon} (${daemonSocket(names.daemon)})`,
      start: (ctx) => thinStart(names, ctx),
      delete: (flags) => thinDelete(names, flags),
      features: sharedModeFeatures,
    },
    argv,
  );
}
