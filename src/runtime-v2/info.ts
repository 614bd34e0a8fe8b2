// `shim -info`: what containerd's `ctr plugins inspect-runtime` prints of a runtime. Both
// kinds of shim binary answer it.

import { SHIM_VERSION } from "../common/constants.ts";

/** containerd.types.RuntimeInfo {string name = 1; RuntimeVersion version = 2 {string version = 1; string revision = 2}} */
export async function runtimeInfo(runtime: string): Promise<Uint8Array> {
  const { BinaryWriter } = await import("@bufbuild/protobuf/wire");
  const w = new BinaryWriter();
  w.uint32(10).string(runtime);
  w.uint32(18).fork().uint32(10).string(SHIM_VERSION).join();
  return w.finish();
}
