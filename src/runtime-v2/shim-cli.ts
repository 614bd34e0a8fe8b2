// The command line of a runtime v2 shim binary, the same for both kinds we ship: a normal-mode
// shim (src/shim/command-line.ts: `start` starts a server) and shared mode's thin shim
// (src/daemon/thin-shim.ts: `start` asks the daemon for a sandbox). What containerd runs:
//
//   <shim> -namespace NS -address ADDR -publish-binary BIN -id ID [-bundle DIR] [-debug] start|delete
//   <shim> -info    (runtime options on stdin; prints a containerd.types.RuntimeInfo)
//   <shim> -v
//
// Everything containerd's side of that protocol asks is answered here, once: the flags, the
// version, -info, stdin (runtime options, or 2.3+'s BootstrapParams), the bundle check, the
// pod a container belongs to (its annotations), where events go (the TTRPC_ADDRESS fallback),
// the address file and the form of `start`'s reply. A binary brings only what its `start` and
// `delete` do.
//
// This runs at every container's start and delete: it imports only what the action needs.

import { lstatSync, readFileSync, readlinkSync, readSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { SHIM_VERSION } from "../common/constants.ts";
import { groupId, writeAddressFile } from "./address.ts";
import { parseShimFlags, type ShimFlags, ttrpcAddress } from "./flags.ts";
import type { OciFeatures } from "./info.ts";
import { shimPaths } from "./paths.ts";
import { bootstrapParams, startReply } from "./reply.ts";

/** What `start` is asked, with containerd's inputs already read and checked. */
export interface StartContext {
  flags: ShimFlags;
  /** The bundle (`-bundle`, else the directory containerd runs `start` in); it holds config.json. */
  bundle: string;
  /** The group the container's server serves: its pod's sandbox id (CRI annotations), else its own id. */
  group: string;
  /** Where containerd 2.3+ wants the socket (BootstrapParams), if it said. */
  socketDir?: string;
  /** containerd's ttrpc address, where task events go: BootstrapParams, else TTRPC_ADDRESS, else `<address>.ttrpc`. */
  ttrpcAddress: string;
  /**
   * Started by containerd's `shim` sandbox controller for a pod (`-id` is the sandbox's): its
   * bundle has no config.json, and the Sandbox API's CreateSandbox comes next on our address.
   */
  sandbox: boolean;
}

/** One shim binary: its names, and what its `start` and `delete` do. */
export interface ShimBinary {
  /** containerd-shim-<name>-v<N>: what containerd looks for on its PATH. */
  binaryName: string;
  /** The runtime name containerd is given (io.containerd.<name>.v<N>), for -info. */
  runtime: string;
  /** One line for the usage text. */
  description: string;
  /** The address of the server for this container, found or started. */
  start(ctx: StartContext): Promise<string>;
  /** A containerd.runtime.task.v2.DeleteResponse for a container whose server is gone. */
  delete(flags: ShimFlags): Promise<Uint8Array>;
  /**
   * For -info: what this shim honours of its OCI runtime's features (`runc features`): the
   * runtime's own document where every container of the handler gets what it says, less
   * where a container of ours would not.
   */
  features(runtime: OciFeatures): OciFeatures;
}

/** The process around the command line (a test passes its own). */
export interface CliIo {
  stdin(): Promise<Uint8Array>;
  stdout(out: string | Uint8Array): void;
  stderr(out: string): void;
  env: Record<string, string | undefined>;
  cwd: string;
}

/** containerd reads at most this much of a shim's stdin too (its `start`). */
const STDIN_LIMIT = 10 << 20;

/** Runs one command line; resolves with the exit status. Failures are said on stderr (containerd logs it). */
export async function runShimCli(argv: string[], shim: ShimBinary, io: CliIo): Promise<number> {
  const usage = () =>
    `usage: ${shim.binaryName} [-namespace NS -address ADDR -publish-binary BIN -id ID [-bundle DIR] [-debug]] start|delete\n` +
    `       ${shim.binaryName} -info | -v | -h\n${shim.description}\n`;
  let flags: ShimFlags;
  try {
    flags = parseShimFlags(argv);
  } catch (e) {
    io.stderr(`${(e as Error).message}\n${usage()}`);
    return 2;
  }
  const action = flags.rest[0];
  try {
    switch (action) {
      case "v":
      case "version":
        io.stdout(`${shim.binaryName} (${SHIM_VERSION})\n`);
        return 0;
      case "info": {
        // containerd 2.x runs `shim -info` (runtime options on stdin, an Any) and parses a
        // RuntimeInfo from stdout: for `ctr plugins inspect-runtime`, idmap mount checks, the
        // CRI plugin's handler features (it offers recursive read-only mounts and user
        // namespaces only to a handler whose features list them) and (2.4+) every Create,
        // looking for a mount annotation. The features are the OCI runtime's, as the options
        // name it (BinaryName) or as the shim finds it, narrowed by the shim.
        const input = await io.stdin();
        const [{ runtimeInfo, ociRuntimeFeatures }, { runtimeOptionsOf }, { Any }, { findRuntime }] = await Promise.all([
          import("./info.ts"),
          import("../task/runtime-options.ts"),
          import("../task/gen/google/protobuf/any.ts"),
          import("../linux/runc.ts"),
        ]);
        const options = input.length ? await runtimeOptionsOf(Any.decode(input)) : null;
        const features = ociRuntimeFeatures(
          options?.binaryName || findRuntime(io.env.BUNWASI_RUNTIME),
          join(shimPaths(io.env).stateRoot, "features"),
        );
        io.stdout(await runtimeInfo(shim.runtime, features && shim.features(features)));
        return 0;
      }
      case "start":
        needNamespace(flags);
        io.stdout(await start(shim, flags, io));
        return 0;
      case "delete":
        needNamespace(flags);
        io.stdout(await shim.delete(flags));
        return 0;
      case "help":
        io.stdout(usage());
        return 0;
      default:
        io.stderr(`${action === undefined ? "no action given" : `unknown action ${action}`}\n${usage()}`);
        return 2;
    }
  } catch (e) {
    io.stderr(`${shim.binaryName} ${action}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

/** `start`: the checks and inputs every kind of shim needs, its own start, and the reply this containerd reads. */
async function start(shim: ShimBinary, flags: ShimFlags, io: CliIo): Promise<string | Uint8Array> {
  // containerd runs `start` inside the bundle (its cwd) without -bundle. Anything else is not a
  // start by containerd: refuse it rather than leave an address file in a random directory.
  const bundle = flags.bundle || io.cwd;
  let config: string | undefined;
  try {
    config = readFileSync(`${bundle}/config.json`, "utf8");
  } catch {
    if (!sandboxBundle(bundle))
      throw new Error(`${bundle} is not a bundle (no config.json); containerd runs start in the bundle directory`);
  }
  const params = await bootstrapParams(await io.stdin(), flags);
  const address = await shim.start({
    flags,
    bundle,
    sandbox: config === undefined,
    // A sandbox is its own group: its containers name it in their sandbox-id annotation.
    group: config === undefined ? flags.id : groupId(flags.id, annotations(config)),
    ...(params?.socketDir ? { socketDir: params.socketDir } : {}),
    ttrpcAddress: params?.containerdTtrpcAddress || ttrpcAddress(flags, io.env),
  });
  writeAddressFile(bundle, address);
  return startReply(address, params, io.env);
}

/**
 * A bundle containerd's shim sandbox controller made for a pod: no spec (CRI gives none), but
 * containerd's bundle layout (core/runtime/v2/bundle.go: a `rootfs` directory and a `work`
 * link to the working directory, made before the spec would be written).
 */
function sandboxBundle(bundle: string): boolean {
  try {
    return statSync(`${bundle}/rootfs`).isDirectory() && lstatSync(`${bundle}/work`).isSymbolicLink();
  } catch {
    return false;
  }
}

function needNamespace(flags: ShimFlags): void {
  // As containerd's own shims: every start and delete belongs to a namespace.
  if (!flags.namespace) throw new Error("-namespace is required (containerd always passes it)");
}

function annotations(config: string): Record<string, string> | undefined {
  try {
    return JSON.parse(config).annotations;
  } catch {
    // A config.json that does not parse: the container is its own group, and its Create
    // fails naming the error, where containerd shows it.
    return undefined;
  }
}

/** This process's stdin, stdout and stderr, read and written synchronously. */
export const processIo: CliIo = {
  stdin: readStdin,
  // Synchronous: the process exits right after, and an asynchronous write could be cut short.
  stdout: (out) => writeAll(1, out),
  stderr: (out) => writeAll(2, out),
  env: process.env,
  get cwd() {
    return process.cwd();
  },
};

/** Runs the command line on this process and exits with its status. */
export async function shimCliMain(shim: ShimBinary, argv: string[] = process.argv.slice(2)): Promise<never> {
  process.exit(await runShimCli(argv, shim, processIo));
}

/**
 * All of stdin until EOF (containerd writes what it has and closes it); nothing from a
 * terminal. Read synchronously: an asynchronous read would start Bun's thread pool for a
 * process that lives milliseconds. Neither process.stdin nor node:tty is touched: either loads
 * Node's streams, measured at 2 to 13 ms of CPU in a process whose whole life is about 10.
 */
async function readStdin(): Promise<Uint8Array> {
  if (fromTerminal()) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const buf = new Uint8Array(64 << 10);
    let n: number;
    try {
      n = readSync(0, buf);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // A non-blocking stdin with nothing yet: wait for it, as the blocking read would.
      if (code === "EAGAIN") {
        await Bun.sleep(1);
        continue;
      }
      if (code === "EBADF" || code === "EINVAL") break; // no stdin at all
      throw e;
    }
    if (n === 0) break;
    chunks.push(buf.subarray(0, n));
    total += n;
    if (total > STDIN_LIMIT) throw new Error(`stdin holds more than ${STDIN_LIMIT} bytes`);
  }
  return chunks.length === 1 ? (chunks[0] as Uint8Array) : Buffer.concat(chunks);
}

/** Whether stdin is a terminal (someone typing at a shell): its device says so. */
function fromTerminal(): boolean {
  try {
    return /^\/dev\/(pts\/|tty|console$)/.test(readlinkSync("/proc/self/fd/0"));
  } catch {
    return false; // no stdin, or no /proc: nothing to wait for either way
  }
}

function writeAll(fd: number, out: string | Uint8Array): void {
  const bytes = typeof out === "string" ? Buffer.from(out) : out;
  for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off);
}
