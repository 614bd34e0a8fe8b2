// `shim start`: find or start the server for this container's group, print its address.
// containerd reads our stdout and stderr until every holder closes them, so the server
// we start must hold neither.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Client } from "../ttrpc/index.ts";
import { ensureSocketDir, groupId, socketAddress, socketPath, writeAddressFile } from "./address.ts";
import { formatShimFlags, type ShimFlags } from "./flags.ts";
import { BootstrapParams } from "./gen/containerd/runtime/bootstrap/v1/bootstrap.ts";

export async function start(flags: ShimFlags, stdin: Uint8Array, self: string[]): Promise<string> {
  const bundle = flags.bundle || process.cwd();
  const params = bootstrapParams(stdin, flags);
  const annotations = readAnnotations(bundle);
  const address = socketAddress(flags.address, flags.namespace, groupId(flags.id, annotations), params?.socketDir || undefined);

  if (await listening(address)) {
    writeAddressFile(bundle, address);
    return address;
  }

  ensureSocketDir(address);
  const child = Bun.spawn([...self, ...formatShimFlags({ ...flags, bundle, socket: address }), "serve"], {
    cwd: bundle,
    stdio: ["ignore", "ignore", "ignore"],
    detached: true,
    env: { ...process.env, TTRPC_ADDRESS: params?.containerdTtrpcAddress || process.env.TTRPC_ADDRESS || `${flags.address}.ttrpc` },
  });
  child.unref();
  const deadline = Date.now() + 10_000;
  while (!(await listening(address))) {
    if (child.exitCode !== null) throw new Error(`shim server exited with status ${child.exitCode} before listening`);
    if (Date.now() > deadline) throw new Error(`shim server did not listen on ${address} within 10 s`);
    await Bun.sleep(5);
  }
  writeAddressFile(bundle, address);
  return address;
}

async function listening(address: string): Promise<boolean> {
  if (!existsSync(socketPath(address))) return false;
  try {
    const c = await Client.connect(socketPath(address), { timeoutMs: 1000 });
    c.close();
    return true;
  } catch {
    return false;
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
    return null;
  }
}

function readAnnotations(bundle: string): Record<string, string> | undefined {
  try {
    return JSON.parse(readFileSync(join(bundle, "config.json"), "utf8")).annotations;
  } catch {
    return undefined;
  }
}
