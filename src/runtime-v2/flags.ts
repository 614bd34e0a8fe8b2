// The command line containerd gives a runtime v2 shim, in Go's flag syntax:
// `-namespace NS -address SOCK -publish-binary BIN -id ID [-bundle DIR] [-debug] start|delete`.
// Go accepts -flag, --flag, -flag=value and -flag value; so do we.

/**
 * Set by `start` for the server it spawns: the fd (3) of the listening socket it bound. Not a
 * flag, so containerd's flag syntax stays as it is; the server drops it from its environment.
 */
export const LISTEN_FD_ENV = "BUNWASI_LISTEN_FD";

export interface ShimFlags {
  namespace: string;
  address: string;
  publishBinary: string;
  id: string;
  bundle: string;
  debug: boolean;
  socket: string;
  /** What is left after the flags: the action (start, delete, serve, executor …) and its arguments. */
  rest: string[];
}

const stringFlags: Record<string, keyof ShimFlags> = {
  namespace: "namespace",
  address: "address",
  "publish-binary": "publishBinary",
  id: "id",
  bundle: "bundle",
  socket: "socket",
};

export function parseShimFlags(argv: readonly string[]): ShimFlags {
  const out: ShimFlags = { namespace: "", address: "", publishBinary: "", id: "", bundle: "", debug: false, socket: "", rest: [] };
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      i++;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") break;
    const body = arg.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (name === "debug" || name === "v" || name === "info") {
      if (name === "debug") out.debug = eq < 0 || body.slice(eq + 1) !== "false";
      else out.rest.push(name);
      continue;
    }
    // Go's flag package knows -h and -help without their being defined; as Go shims, usage.
    if (name === "h" || name === "help") {
      out.rest.push("help");
      continue;
    }
    const key = stringFlags[name];
    if (key === undefined) throw new Error(`flag provided but not defined: -${name}`);
    const value = eq >= 0 ? body.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new Error(`flag needs an argument: -${name}`);
    (out as unknown as Record<string, string>)[key] = value;
  }
  out.rest.push(...argv.slice(i));
  return out;
}

/**
 * containerd's ttrpc socket, where task events go: TTRPC_ADDRESS, which containerd sets for
 * every shim it runs (and `start` for the server it spawns), else `<-address>.ttrpc`, where
 * containerd always puts it. containerd 2.3+ also names it in BootstrapParams (./shim-cli.ts).
 */
export function ttrpcAddress(flags: ShimFlags, env: Record<string, string | undefined>): string {
  return env.TTRPC_ADDRESS || `${flags.address}.ttrpc`;
}

/** The flags again, for the server process we start with the same view of the world. */
export function formatShimFlags(f: ShimFlags): string[] {
  const out = ["-namespace", f.namespace, "-address", f.address, "-publish-binary", f.publishBinary, "-id", f.id];
  if (f.bundle) out.push("-bundle", f.bundle);
  if (f.socket) out.push("-socket", f.socket);
  if (f.debug) out.push("-debug");
  return out;
}
