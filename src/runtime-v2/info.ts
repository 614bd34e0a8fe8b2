// `shim -info`: what containerd learns of a runtime (`ctr plugins inspect-runtime`, and the
// CRI plugin's per-handler features: recursive read-only mounts, user namespaces). Both kinds
// of shim binary answer it. Like containerd-shim-runc-v2, the features are the OCI runtime's
// own (`runc features`, the runtime-spec's features.md document), found from the runtime
// options containerd writes on stdin (BinaryName) or the shim's default runtime; each shim
// then keeps of them what it honours (ShimBinary.features).

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
export function ociRuntimeFeatures(binary: string): OciFeatures | null {
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
