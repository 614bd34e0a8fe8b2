// `shim start`: find or start the server for this container's group, print its address.
// containerd reads our stdout and stderr until every holder closes them, so the server
// we start must hold neither.

import { existsSync, readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { withSmallVm } from "../common/vm-env.ts";
import { BootstrapParams, BootstrapResult } from "../task/gen/containerd/runtime/bootstrap/v1/bootstrap.ts";
// unix.ts alone, not the ttrpc index: `start` runs for every container and loads no RPC code.
import { bindUnixSocket, closeFd } from "../ttrpc/unix.ts";
import { ensureSocketDir, groupId, socketAddress, socketPath, writeAddressFile } from "./address.ts";
import { formatShimFlags, LISTEN_FD_ENV, type ShimFlags } from "./flags.ts";

/**
 * Starts (or finds) the server and returns what to print on stdout for this containerd:
 * see startReply.
 */
export async function start(
  flags: ShimFlags,
  stdin: Uint8Array,
  self: string[],
  env: Record<string, string | undefined> = process.env,
): Promise<string | Uint8Array> {
  const params = bootstrapParams(stdin, flags);
  return startReply(await startServer(flags, params, self), params, env);
}

/**
 * What `start` prints, by what the caller is (each checked in containerd's source):
 * - 2.3+ sends BootstrapParams on stdin: a protobuf BootstrapResult{version 3, ttrpc}, as its
 *   own shims print. Version 3 = task v3 API, and in a pod containerd then reuses the sandbox's
 *   shim instead of running `start`/`delete` per container (we group by sandbox id anyway).
 * - 1.7 to 2.2 set MAX_SHIM_VERSION (always "2") and send an Any or nothing: the JSON
 *   `{"version":2,…}`. 1.7 refuses a version above 2, and 2.0–2.2 cannot be told from 1.7 by
 *   anything they pass us, so they get 2 too (and talk task v2 through their v2 bridge).
 * - 1.6 (no MAX_SHIM_VERSION) accepts only the plain address.
 */
export function startReply(address: string, params: BootstrapParams | null, env: Record<string, string | undefined>): string | Uint8Array {
  if (params) return BootstrapResult.encode({ version: 3, address, protocol: "ttrpc" }).finish();
  if (Number(env.MAX_SHIM_VERSION) >= 2) return JSON.stringify({ version: 2, address, protocol: "ttrpc" });
  return address;
}

async function startServer(flags: ShimFlags, params: BootstrapParams | null, self: string[]): Promise<string> {
  // containerd runs `start` inside the bundle (its cwd) without -bundle. Anything else is not a
  // start by containerd: refuse it rather than leave an address file in a random directory.
  const bundle = flags.bundle || process.cwd();
  if (!existsSync(join(bundle, "config.json"))) {
    throw new Error(`start: ${bundle} is not a bundle (no config.json); containerd runs start in the bundle directory`);
  }
  const annotations = readAnnotations(bundle);
  const address = socketAddress(flags.address, flags.namespace, groupId(flags.id, annotations), params?.socketDir || undefined);

  if (await listening(address)) {
    writeAddressFile(bundle, address);
    return address;
  }

  ensureSocketDir(address);
  // We bind the socket here and hand it to the server as fd 3, as containerd's own shims do:
  // of two `start`s racing for one pod, exactly one binds, and the other finds it listening.
  // The kernel queues containerd's connection until the server accepts, so we need not wait
  // for the server to come up.
  const fd = await bindOrReuse(address);
  if (fd === null) {
    writeAddressFile(bundle, address);
    return address;
  }
  try {
    const child = Bun.spawn([...self, ...formatShimFlags({ ...flags, bundle, socket: address }), "serve"], {
      cwd: bundle,
      stdio: ["ignore", "ignore", "ignore", fd],
      detached: true,
      env: {
        ...withSmallVm(process.env),
        [LISTEN_FD_ENV]: "3",
        TTRPC_ADDRESS: params?.containerdTtrpcAddress || process.env.TTRPC_ADDRESS || `${flags.address}.ttrpc`,
      },
    });
    child.unref();
  } catch (e) {
    await rm(socketPath(address), { force: true });
    throw e;
  } finally {
    closeFd(fd);
  }
  writeAddressFile(bundle, address);
  return address;
}

/**
 * A listening socket bound at the address, or null when a live server already holds it (a
 * concurrent `start` for the same pod won). A socket file nobody listens on is what a killed
 * server leaves behind: it is removed and the bind tried once more.
 */
async function bindOrReuse(address: string): Promise<number | null> {
  const path = socketPath(address);
  for (let attempt = 0; ; attempt++) {
    try {
      return bindUnixSocket(path);
    } catch (e) {
      if ((e as { code?: string }).code !== "EADDRINUSE" || attempt > 0) throw e;
      if (await listening(address)) return null;
      await rm(path, { force: true });
    }
  }
}

/** Someone accepts on the socket: a plain connect, so `start` loads no RPC code. */
async function listening(address: string): Promise<boolean> {
  const path = socketPath(address);
  if (!existsSync(path)) return false;
  try {
    const socket = await Bun.connect({ unix: path, socket: { data() {} } });
    socket.end();
    return true;
  } catch {
    return false; // refused: a socket file left by a server that is gone
  }
}

/**
 * containerd 2.3+ sends BootstrapParams; older ones an Any of runtime options or nothing.
 * An Any also parses as BootstrapParams, so only trust it if it names this task.
 */
export function bootstrapParams(stdin: Uint8Array, flags: ShimFlags): BootstrapParams | null {
  if (stdin.length === 0) return null;
  try {
    const p = BootstrapParams.decode(stdin);
    return p.instanceId === flags.id && p.namespace === flags.namespace ? p : null;
  } catch {
    return null; // not a protobuf at all: an older containerd's options, or nothing we know
  }
}

function readAnnotations(bundle: string): Record<string, string> | undefined {
  try {
    return JSON.parse(readFileSync(join(bundle, "config.json"), "utf8")).annotations;
  } catch {
    // A config.json that does not parse: the container is its own group, and its Create
    // fails naming the error, where containerd shows it.
    return undefined;
  }
}
