// The public API of @bunwasi/shim (this folder's package.json), the one list of what the
// package promises under semantic versioning (./CHANGELOG.md); test/package/shim-api.ts pins
// it. Everything else in src/ is internal, shipped as built code only.

export type {
  Compiler,
  ContainerSpec,
  CpuLimits,
  Engine,
  Entrypoint,
  ExecutorFile,
  ExecutorNeeds,
  LoadOptions,
  RunContext,
  RunControl,
  Runner,
  RunResult,
  StdioSpec,
  ThreadKill,
} from "../engines/engine.ts";
export {
  defineHostFunctions,
  type HostCaller,
  type HostFunction,
  type HostFunctions,
  type HostLoadOptions,
  type ValType,
  withHostFunctions,
} from "../engines/host-functions.ts";
export { runShim, type ShimOptions } from "../shim/shim.ts";
