// `shim -info`: what containerd learns of a runtime (`ctr plugins inspect-runtime`, and the
// CRI plugin's per-handler features: recursive read-only mounts, user namespaces). Both kinds
// of shim binary answer it. Like containerd-shim-runc-v2, the features are the OCI runtime's
// own (`runc features`, the runtime-spec's features.md document), found from the runtime
// options containerd writes on stdin (BinaryName) or the shim's default runtime; each shim
// then keeps of them what it honours (ShimBinary.features).

import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, realpathSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SHIM_VERSION } from "../common/constants.ts";

/** The runtime-spec features document (features.md): only what a shim narrows is typed. */
export interface OciFeatures {
  mountOptions?: string[];
  linux?: { namespaces?: string[]; [key: string]: unknown };
  [key: string]: unknown;
}

/**
 * The Any type URL containerd registers for runtime-spec's features.Features (typeurl,
 * "types.containerd.io" + "opencontainers/runtime-spec" + spec major + "features/Features");
 * typeurl carries a Go type that is not a protobuf message as its JSON.
 */
export const FEATURES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/**
 * `<runtime> features`, parsed; null when the runtime has no such command (runc before 1.1,
 * youki) or answers something else: containerd then treats the runtime as having no
 * features, as it does when containerd-shim-runc-v2 omits them for the same reason.
 */
export function ociRuntimeFeatures(binary: string, cacheDir?: string): OciFeatures | null {
  const cached = cacheDir ? featuresCacheFile(binary, cacheDir) : null;
  if (cached) {
    try {
      const f = JSON.parse(readFileSync(cached, "utf8"));
      if (f === null || (typeof f === "object" && !Array.isArray(f))) return f as OciFeatures | null;
    } catch {
      // absent or unreadable: ask the runtime and write it again
    }
  }
  const features = askRuntimeFeatures(binary);
  if (cached && cacheDir) {
    try {
      mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
      const tmp = `${cached}.${process.pid}`;
      writeFileSync(tmp, JSON.stringify(features), { mode: 0o600 });
      renameSync(tmp, cached);
    } catch {
      // a cache we cannot write costs the next -info one more `features`, nothing else
    }
  }
  return features;
}

/**
 * Where the answer of this very binary is kept: containerd 2.4 runs `-info` before every
 * Create, and `runc features` was most of its time. The name is a digest of the binary's
 * resolved path and its inode's identity (device, inode, size, change times): a runtime
 * upgraded in place or replaced by a rename gets a new name, so a stale answer is never read.
 * The directory is under the shim's state root (root's, in RAM), never a workload's.
 */
function featuresCacheFile(binary: string, cacheDir: string): string | null {
  try {
    const path = realpathSync(binary);
    const st = statSync(path, { bigint: true });
    const identity = [path, st.dev, st.ino, st.size, st.mtimeNs, st.ctimeNs].join("\0");
    return join(cacheDir, `${createHash("sha256").update(identity).digest("hex").slice(0, 32)}.json`);
  } catch {
    return null;
  }
}

function askRuntimeFeatures(binary: string): OciFeatures | null {
  try {
    const r = Bun.spawnSync([binary, "features"], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) return null;
    const f = JSON.parse(r.stdout.toString());
    return f && typeof f === "object" && !Array.isArray(f) ? (f as OciFeatures) : null;
  } catch {
    return null;
  }
}

/**
 * containerd.types.RuntimeInfo {string name = 1; RuntimeVersion version = 2 {string version = 1;
 * string revision = 2}; google.protobuf.Any features = 4}.
 */
export async function runtimeInfo(runtime: string, features: OciFeatures | null = null): Promise<Uint8Array> {
  const { BinaryWriter } = await import("@bufbuild/protobuf/wire");
  const w = new BinaryWriter();
  w.uint32(10).string(runtime);
  w.uint32(18).fork().uint32(10).string(SHIM_VERSION).join();
  if (features) {
    // google.protobuf.Any {string type_url = 1; bytes value = 2}
    w.uint32(34)
      .fork()
      .uint32(10)
      .string(FEATURES_TYPE_URL)
      .uint32(18)
      .bytes(new TextEncoder().encode(JSON.stringify(features)))
      .join();
  }
  return w.finish();
}
