// What a shim's `start` prints, and what containerd 2.3+ tells it on stdin: the same for a
// normal-mode shim and shared mode's thin shim (both through ./shim-cli.ts). The generated
// bootstrap messages are loaded only when containerd sent something: up to 2.2 without runtime
// options, `start` never needs them.

import type { BootstrapParams } from "../task/gen/containerd/runtime/bootstrap/v1/bootstrap.ts";
import type { ShimFlags } from "./flags.ts";

export type { BootstrapParams };

const generated = () => import("../task/gen/containerd/runtime/bootstrap/v1/bootstrap.ts");

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
export async function startReply(
  address: string,
  params: BootstrapParams | null,
  env: Record<string, string | undefined>,
): Promise<string | Uint8Array> {
  if (params) return (await generated()).BootstrapResult.encode({ version: 3, address, protocol: "ttrpc" }).finish();
  if (Number(env.MAX_SHIM_VERSION) >= 2) return JSON.stringify({ version: 2, address, protocol: "ttrpc" });
  return address;
}

/**
 * containerd 2.3+ sends BootstrapParams; older ones an Any of runtime options or nothing.
 * An Any also parses as BootstrapParams, so only trust it if it names this task.
 */
export async function bootstrapParams(stdin: Uint8Array, flags: ShimFlags): Promise<BootstrapParams | null> {
  if (stdin.length === 0) return null;
  const { BootstrapParams } = await generated();
  try {
    const p = BootstrapParams.decode(stdin);
    return p.instanceId === flags.id && p.namespace === flags.namespace ? p : null;
  } catch {
    return null; // not a protobuf at all: an older containerd's options, or nothing we know
  }
}
