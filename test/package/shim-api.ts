// The public surface of @bunwasi/shim, pinned. Every export of every entry point is restated
// here and compared for type identity, so a change of the API (a member added, removed,
// renamed, made optional, its type changed) fails type checking until this file changes
// with it, and with it src/package/CHANGELOG.md and the version (semantic versioning).
// `tsc -p .` checks it against the sources (the root tsconfig maps the package's names to
// src/package); test/package/shim-package.test.ts checks it against the installed package's
// .d.ts, and that each entry exports exactly the names in SURFACE.

import type * as Shim from "@bunwasi/shim";
import type * as Build from "@bunwasi/shim/build";
import type * as Wasmtime from "@bunwasi/shim/wasmtime";

/** Each entry point's exported names, values and types. */
export const SURFACE = {
  "@bunwasi/shim": [
    "Compiler",
    "ContainerSpec",
    "CpuLimits",
    "Engine",
    "Entrypoint",
    "ExecutorFile",
    "ExecutorNeeds",
    "HostCaller",
    "HostFunction",
    "HostFunctions",
    "HostLoadOptions",
    "LoadOptions",
    "RunContext",
    "RunControl",
    "RunResult",
    "Runner",
    "ShimOptions",
    "StdioSpec",
    "ThreadKill",
    "ValType",
    "defineHostFunctions",
    "runShim",
    "withHostFunctions",
  ],
  "@bunwasi/shim/wasmtime": ["wasmtime"],
  "@bunwasi/shim/build": ["BUILD_FLAGS", "BuildOptions", "buildCommand", "buildShim", "packageScripts"],
} as const;

type Equal<X, Y> = (<T>() => T extends X ? 1 : 2) extends <T>() => T extends Y ? 1 : 2 ? true : false;
type Pin<T extends true> = T;

// ---- @bunwasi/shim: the engine boundary ----

type StdioSpec = { kind: "inherit" } | { kind: "path"; path: string } | { kind: "fd"; fd: number };

interface ContainerSpec {
  readonly process?: { readonly args?: readonly string[]; readonly env?: readonly string[]; readonly cwd?: string };
  readonly annotations?: Readonly<Record<string, string>>;
}

interface Entrypoint {
  path: string;
  host: string;
  entry?: string;
  head: Uint8Array;
}

interface Compiler {
  cacheKey(source: Uint8Array): Promise<string>;
  compile(source: Uint8Array): Promise<Uint8Array>;
}

interface ExecutorFile {
  name: string;
  source: string;
  sharedObject?: boolean;
}

interface ExecutorNeeds {
  files: ExecutorFile[];
  options?: Record<string, string>;
}

interface LoadOptions {
  dir?: string;
  options?: Record<string, string>;
  cacheDir?: string;
  killGraceMs?: number;
  thisThread?: boolean;
  noFileCapabilities?: boolean;
  pools?: boolean;
  onRunThreads?: (alive: number) => void;
}

interface RunContext {
  module?: Uint8Array;
  modulePath?: string;
  compiled?: string;
  args: string[];
  env: string[] | Record<string, string>;
  rootDir?: string;
  rootReadOnly?: boolean;
  preopens?: { hostPath: string; guestPath: string; readOnly?: boolean }[];
  cwd?: string;
  stdin?: StdioSpec;
  stdout?: StdioSpec;
  stderr?: StdioSpec;
  httpServices?: boolean;
  httpNetwork?: { netns?: string; outgoing?: boolean };
  entry?: string;
  memoryLimitBytes?: number;
  cpu?: CpuLimits;
  maxOpenFiles?: number;
  terminal?: boolean;
  signal?: AbortSignal;
  stopNow?: AbortSignal;
  onControl?: (control: RunControl) => void;
  watchStdin?: (news: (ended: boolean) => void) => void;
  onHttpService?: (
    counters: () => {
      requests: number;
      failed: number;
      inFlight: number;
      connections: number;
      latency?: { bounds: readonly number[]; counts: readonly number[]; sum: number };
    },
  ) => void;
}

interface ThreadKill {
  readonly word: Int32Array;
  sleep(ns: bigint): boolean;
  setInterrupt(fn: number, arg: number): void;
}

interface CpuLimits {
  quota?: number;
  period?: number;
  shares?: number;
  cpus?: number[];
}

interface RunControl {
  pause(): void;
  resume(): void;
  setCpu?(cpu: CpuLimits): void;
  setCpus?(cpus: number[] | undefined): void;
  cpuThrottling?(): { periods: number; throttledPeriods: number; throttledNs: number };
  threadId?(): number | undefined;
  memoryBytes?(): Promise<number | undefined>;
  setMemoryLimit?(bytes: number | undefined): Promise<void>;
  cpuNs?(): number;
}

interface RunResult {
  code: number;
  service?: boolean;
  stats: Record<string, number | boolean | undefined>;
}

interface Runner {
  run(ctx: RunContext): Promise<RunResult>;
  runHere?(ctx: Omit<RunContext, "signal" | "onControl">, kill: ThreadKill): Promise<RunResult>;
  close(): void;
}

interface Engine {
  readonly name: string;
  canHandle(ep: Entrypoint, spec: ContainerSpec): boolean;
  readonly compiler?: Compiler;
  executor(): ExecutorNeeds;
  load(opts?: LoadOptions): Promise<Runner>;
  isService?(module: Uint8Array): boolean;
}

// ---- @bunwasi/shim: host functions and runShim ----

type ValType = "i32" | "i64" | "f32" | "f64";

interface HostCaller {
  memory(): Uint8Array;
}

interface HostFunction {
  params: ValType[];
  results: ValType[];
  call(caller: HostCaller, ...args: (number | bigint)[]): number | bigint | undefined;
}

type HostFunctions = Record<string, Record<string, HostFunction>>;

interface HostLoadOptions extends LoadOptions {
  hostModules?: string[];
}

interface ShimOptions {
  binaryName: string;
  runtime: string;
  engine: Engine;
}

// ---- @bunwasi/shim/build ----

interface BuildOptions {
  entry: string;
  outfile: string;
  embed?: string[];
  wasmtime?: boolean;
  cwd?: string;
}

export type Pins = [
  Pin<Equal<Shim.StdioSpec, StdioSpec>>,
  Pin<Equal<Shim.ContainerSpec, ContainerSpec>>,
  Pin<Equal<Shim.Entrypoint, Entrypoint>>,
  Pin<Equal<Shim.Compiler, Compiler>>,
  Pin<Equal<Shim.ExecutorFile, ExecutorFile>>,
  Pin<Equal<Shim.ExecutorNeeds, ExecutorNeeds>>,
  Pin<Equal<Shim.LoadOptions, LoadOptions>>,
  Pin<Equal<Shim.RunContext, RunContext>>,
  Pin<Equal<Shim.ThreadKill, ThreadKill>>,
  Pin<Equal<Shim.CpuLimits, CpuLimits>>,
  Pin<Equal<Shim.RunControl, RunControl>>,
  Pin<Equal<Shim.RunResult, RunResult>>,
  Pin<Equal<Shim.Runner, Runner>>,
  Pin<Equal<Shim.Engine, Engine>>,
  Pin<Equal<Shim.ValType, ValType>>,
  Pin<Equal<Shim.HostCaller, HostCaller>>,
  Pin<Equal<Shim.HostFunction, HostFunction>>,
  Pin<Equal<Shim.HostFunctions, HostFunctions>>,
  Pin<Equal<Shim.HostLoadOptions, HostLoadOptions>>,
  Pin<Equal<Shim.ShimOptions, ShimOptions>>,
  Pin<Equal<typeof Shim.runShim, (opts: ShimOptions, argv?: string[]) => void>>,
  Pin<Equal<typeof Shim.defineHostFunctions, (fns: HostFunctions) => HostFunctions>>,
  Pin<Equal<typeof Shim.withHostFunctions, (engine: Engine, opts: { name?: string; modules: (string | URL)[] }) => Engine>>,
  Pin<Equal<typeof Wasmtime.wasmtime, Engine>>,
  Pin<Equal<Build.BuildOptions, BuildOptions>>,
  Pin<Equal<typeof Build.BUILD_FLAGS, readonly string[]>>,
  Pin<Equal<typeof Build.packageScripts, (opts?: { wasmtime?: boolean }) => string[]>>,
  Pin<Equal<typeof Build.buildCommand, (opts: BuildOptions) => string[]>>,
  Pin<Equal<typeof Build.buildShim, (opts: BuildOptions) => Promise<string>>>,
];
