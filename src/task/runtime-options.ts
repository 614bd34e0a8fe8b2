// The runtime options containerd passes with a Create (CreateTaskRequest.options), as
// containerd-shim-runc-v2 honours them: which OCI runtime binary, its state root, and the
// systemd cgroup driver (so the cgroups match the kubelet's driver). Two encodings arrive:
//
//   containerd.runc.v1.Options   a runc-type runtime's options (ctr, Go clients, CRI for
//                                runtime_type io.containerd.runc.v2)
//   runtimeoptions.v1.Options    what CRI sends for any other runtime_type (ours): the
//                                runtime's `options` TOML table itself (config_body, 1.7+)
//                                or a TOML file's path (config_path, any version)
//
// The TOML keys are runc's Options field names as containerd's config spells them:
// BinaryName, Root, SystemdCgroup. Other keys and fields are not ours to act on and are left.

import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import { Options as RuncOptions } from "./gen/containerd/runc/options/oci.ts";
import { Options as CriRuntimeOptions } from "./gen/containerd/runtimeoptions/v1/options.ts";
import type { Any } from "./gen/google/protobuf/any.ts";

export interface RuntimeOptions {
  /** The OCI runtime binary: a name looked up in PATH, or a path. */
  binaryName?: string;
  /** The runtime's state root; the namespace is appended, as runc-v2 does. */
  root?: string;
  systemdCgroup?: boolean;
}

/** An Any's message name: typeurl may or may not prefix it with a host ("type.googleapis.com/…"). */
function messageName(typeUrl: string): string {
  return typeUrl.slice(typeUrl.lastIndexOf("/") + 1);
}

/** The options of a Create; null when there are none the shim acts on. */
export async function runtimeOptionsOf(any: Any | undefined): Promise<RuntimeOptions | null> {
  if (any === undefined || any.typeUrl === "") return null;
  const name = messageName(any.typeUrl);
  if (name === RuncOptions.$type) {
    const o = RuncOptions.decode(any.value);
    return compact({ binaryName: o.binaryName, root: o.root, systemdCgroup: o.systemdCgroup });
  }
  if (name === CriRuntimeOptions.$type) {
    const o = CriRuntimeOptions.decode(any.value);
    let toml: string;
    if (o.configPath !== "") {
      try {
        toml = readFileSync(o.configPath, "utf8");
      } catch (e) {
        throw invalid(`runtime options: reading config_path ${o.configPath}: ${(e as Error).message}`);
      }
    } else {
      toml = new TextDecoder().decode(o.configBody);
    }
    return fromToml(toml);
  }
  // Another runtime's options (runhcs, …): nothing here for an OCI runtime on Linux.
  return null;
}

/** BinaryName, Root and SystemdCgroup of a runtime's TOML options table. */
export function fromToml(toml: string): RuntimeOptions | null {
  if (toml.trim() === "") return null;
  let table: Record<string, unknown>;
  try {
    table = Bun.TOML.parse(toml) as Record<string, unknown>;
  } catch (e) {
    throw invalid(`runtime options: not TOML: ${(e as Error).message}`);
  }
  const str = (k: string) => {
    const v = table[k];
    if (v === undefined) return undefined;
    if (typeof v !== "string") throw invalid(`runtime options: ${k} must be a string`);
    return v;
  };
  const bool = (k: string) => {
    const v = table[k];
    if (v === undefined) return undefined;
    if (typeof v !== "boolean") throw invalid(`runtime options: ${k} must be true or false`);
    return v;
  };
  return compact({ binaryName: str("BinaryName"), root: str("Root"), systemdCgroup: bool("SystemdCgroup") });
}

/** Drops unset values (proto3's "" and false mean "the default"); null when nothing is left. */
function compact(o: RuntimeOptions): RuntimeOptions | null {
  const out: RuntimeOptions = {};
  if (o.binaryName) out.binaryName = o.binaryName;
  if (o.root) out.root = o.root;
  if (o.systemdCgroup) out.systemdCgroup = true;
  return Object.keys(out).length > 0 ? out : null;
}

function invalid(msg: string): TtrpcError {
  return new TtrpcError(Code.INVALID_ARGUMENT, msg);
}

/**
 * The file in a container's work directory (<stateDir>/<id>) that keeps the runtime options
 * it was created with. `shim delete` runs after a server died and knows nothing but the
 * namespace and id: without this file it would ask the default runtime binary under the
 * default root, and a container created elsewhere would stay (runc-v2 keeps the same in its
 * bundle's options.json). Written before the runtime creates anything and removed with the
 * work directory. JSON of RuntimeOptions: {"binaryName"?, "root"?, "systemdCgroup"?}; the
 * root as given, the namespace is appended by whoever builds the runtime from it.
 */
export const RUNTIME_OPTIONS_FILE = "runtime-options.json";

/** Writes `options` whole (a temporary file renamed over it): a reader never sees half of it. */
export async function saveRuntimeOptions(workDir: string, options: RuntimeOptions): Promise<void> {
  const tmp = join(workDir, `.${RUNTIME_OPTIONS_FILE}.${process.pid}`);
  try {
    writeFileSync(tmp, JSON.stringify(options), { mode: 0o600 });
    renameSync(tmp, join(workDir, RUNTIME_OPTIONS_FILE));
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** The options saveRuntimeOptions kept in `workDir`; null when there is no file (created without options). */
export async function loadRuntimeOptions(workDir: string): Promise<RuntimeOptions | null> {
  const file = join(workDir, RUNTIME_OPTIONS_FILE);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw new Error(`${file}: not JSON`);
  }
  if (o === null || typeof o !== "object") throw new Error(`${file}: not an object`);
  const { binaryName, root, systemdCgroup } = o as Record<string, unknown>;
  if (binaryName !== undefined && typeof binaryName !== "string") throw new Error(`${file}: binaryName is not a string`);
  if (root !== undefined && typeof root !== "string") throw new Error(`${file}: root is not a string`);
  if (systemdCgroup !== undefined && typeof systemdCgroup !== "boolean") throw new Error(`${file}: systemdCgroup is not a boolean`);
  return compact({ binaryName, root, systemdCgroup });
}
