// Which OCI runtime a container runs with, in one place for a server (every call, either mode:
// ./common-host-calls.ts) and `shim delete` (after the server died, ./delete.ts): the namespace's
// default, or the one its Create's runtime options name, with runc-v2's rules (`Root` gets
// the namespace appended, `SystemdCgroup` is `--systemd-cgroup`).

import { join } from "node:path";
import { Runc } from "../linux/runc.ts";
import type { RuntimeOptions } from "../task/runtime-options.ts";

export interface RuntimeDefaults {
  /** The runtime binary found at start (findRuntime). */
  binary: string;
  /** The namespace's root under our state root (runtimeRoot). */
  root: string;
}

export function runtimeFor(namespace: string, defaults: RuntimeDefaults, options: RuntimeOptions | null): Runc {
  return new Runc({
    binary: options?.binaryName || defaults.binary,
    root: options?.root ? join(options.root, namespace) : defaults.root,
    systemdCgroup: options?.systemdCgroup,
  });
}
