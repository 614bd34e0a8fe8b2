// Where a shim listens: containerd derives nothing itself, it reads what `start` prints.
// We use containerd's own scheme so that tools and operators find sockets where they
// expect them, and so that every container of a pod lands on the same shim.

import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { socketPath } from "../common/address.ts";

export { socketPath };

/** containerd's default state dir + "/s"; sockets there are named by a hash, so short. */
export const DEFAULT_SOCKET_DIR = "/run/containerd/s";
/** sun_path is 108 bytes including the terminating NUL. */
const UNIX_PATH_MAX = 107;

/** The CRI plugin marks every container of a pod with the pod's sandbox id. */
const SANDBOX_ID_ANNOTATIONS = ["io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-containerd.sandbox-id"];

export function groupId(id: string, annotations: Record<string, string> | undefined): string {
  for (const key of SANDBOX_ID_ANNOTATIONS) {
    const v = annotations?.[key];
    if (v) return v;
  }
  return id;
}

/** `unix://<dir>/<hex sha256(grpcAddress/namespace/groupId)>`, as containerd's Go shims compute it. */
export function socketAddress(grpcAddress: string, namespace: string, group: string, dir = DEFAULT_SOCKET_DIR): string {
  // Bun's hasher: node:crypto costs the server about 1.3 MiB of JS heap (measured).
  const digest = new Bun.CryptoHasher("sha256").update(join(grpcAddress, namespace, group)).digest("hex");
  const path = join(dir, digest);
  if (path.length > UNIX_PATH_MAX) throw new Error(`socket path too long (${path.length} > ${UNIX_PATH_MAX}): ${path}`);
  return `unix://${path}`;
}

export function ensureSocketDir(address: string): void {
  const path = socketPath(address);
  mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true, mode: 0o711 });
}

/** containerd 1.6/1.7 read `address` in the bundle to reconnect after a restart. */
export function writeAddressFile(bundle: string, address: string): void {
  // One temporary name per process: of two `start`s racing for one bundle, each renames its
  // own file (a shared name lets the first rename take the second's file away).
  const tmp = join(bundle, `.address.${process.pid}.tmp`);
  writeFileSync(tmp, address);
  renameSync(tmp, join(bundle, "address"));
}
