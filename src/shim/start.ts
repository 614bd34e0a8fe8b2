// Normal mode's `start` (the command line around it is ../runtime-v2/shim-cli.ts): find or
// start the server of this container's group and return its address. containerd reads our
// stdout and stderr until every holder closes them, so the server we start holds neither.

import { existsSync, rmSync } from "node:fs";
import { withSmallVm } from "../common/vm-env.ts";
import { ensureSocketDir, socketAddress, socketPath } from "../runtime-v2/address.ts";
import { formatShimFlags, LISTEN_FD_ENV } from "../runtime-v2/flags.ts";
import type { StartContext } from "../runtime-v2/shim-cli.ts";
// unix.ts alone, not the ttrpc index: `start` runs for every container and loads no RPC code.
import { bindUnixSocket, closeFd } from "../ttrpc/unix.ts";

/** How to run this binary again: the command, and its argv[0] when that is not cmd[0]. */
export interface SelfCommand {
  cmd: string[];
  argv0?: string;
}

/** The group's server address; `self` is how to run this binary again (the server is us, with `serve`). */
export async function startServer(ctx: StartContext, self: SelfCommand): Promise<string> {
  const { flags, bundle } = ctx;
  const address = socketAddress(flags.address, flags.namespace, ctx.group, ctx.socketDir);
  if (await listening(address)) return address;

  ensureSocketDir(address);
  // We bind the socket here and hand it to the server as fd 3, as containerd's own shims do:
  // of two `start`s racing for one pod, exactly one binds, and the other finds it listening.
  // The kernel queues containerd's connection until the server accepts, so we need not wait
  // for the server to come up.
  const fd = await bindOrReuse(address);
  if (fd === null) return address;
  try {
    const child = Bun.spawn([...self.cmd, ...formatShimFlags({ ...flags, bundle, socket: address }), "serve"], {
      ...(self.argv0 ? { argv0: self.argv0 } : {}),
      cwd: bundle,
      stdio: ["ignore", "ignore", "ignore", fd],
      detached: true,
      env: { ...withSmallVm(process.env), [LISTEN_FD_ENV]: "3", TTRPC_ADDRESS: ctx.ttrpcAddress },
    });
    child.unref();
  } catch (e) {
    rmSync(socketPath(address), { force: true });
    throw e;
  } finally {
    closeFd(fd);
  }
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
      rmSync(path, { force: true });
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
