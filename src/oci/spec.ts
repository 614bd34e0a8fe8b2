// The part of the OCI runtime spec (config.json) that bunwasi reads or rewrites.
//
// Only the fields we touch are typed; everything else is carried through untouched
// (the index signatures), because the derived bundle we hand to runc must keep every
// setting containerd put there (namespaces, seccomp, capabilities, rlimits, hooks ...).
// Reference: opencontainers/runtime-spec config.md / config-linux.md.

import { readFileSync } from "node:fs";
import { join } from "node:path";

export interface SpecUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
  [k: string]: unknown;
}

export interface SpecRlimit {
  type: string;
  hard: number;
  soft: number;
}

export interface SpecProcess {
  terminal?: boolean;
  user?: SpecUser;
  args: string[];
  env?: string[];
  cwd: string;
  rlimits?: SpecRlimit[];
  [k: string]: unknown;
}

export interface SpecRoot {
  path: string;
  readonly?: boolean;
}

export interface SpecMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

export interface SpecLinuxResources {
  memory?: { limit?: number; reservation?: number; swap?: number; [k: string]: unknown };
  cpu?: { shares?: number; quota?: number; period?: number; [k: string]: unknown };
  [k: string]: unknown;
}

export interface SpecIdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

export interface SpecLinux {
  namespaces?: { type: string; path?: string }[];
  uidMappings?: SpecIdMapping[];
  gidMappings?: SpecIdMapping[];
  cgroupsPath?: string;
  resources?: SpecLinuxResources;
  [k: string]: unknown;
}

export interface Spec {
  ociVersion: string;
  process: SpecProcess;
  root: SpecRoot;
  hostname?: string;
  mounts?: SpecMount[];
  annotations?: Record<string, string>;
  linux?: SpecLinux;
  [k: string]: unknown;
}

/** A config.json problem; the message always starts with the file name and says what is wrong. */
export class SpecError extends Error {
  override name = "SpecError";
}

/** Read and validate `<bundleDir>/config.json`. */
export async function readSpec(bundleDir: string): Promise<Spec> {
  const file = join(bundleDir, "config.json");
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SpecError(
      code === "ENOENT" ? `config.json: not found in bundle ${bundleDir}` : `config.json: cannot read ${file}: ${(e as Error).message}`,
    );
  }
  return parseSpec(text);
}

/** Parse and validate config.json text (exported for tests and for Exec specs). */
export function parseSpec(text: string): Spec {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new SpecError(`config.json: not valid JSON at ${jsonErrorPosition(text, e as Error)}`);
  }
  if (!isObject(raw)) throw new SpecError("config.json: top level must be a JSON object");
  if (typeof raw.ociVersion !== "string" || !raw.ociVersion) throw new SpecError("config.json: ociVersion is missing");

  const p = raw.process;
  if (!isObject(p)) throw new SpecError("config.json: process is missing (a container needs a process to run)");
  if (!Array.isArray(p.args) || p.args.length === 0) throw new SpecError("config.json: process.args is missing or empty");
  p.args.forEach((a, i) => {
    if (typeof a !== "string") throw new SpecError(`config.json: process.args[${i}] is not a string`);
  });
  if (p.args[0] === "") throw new SpecError("config.json: process.args[0] is empty");
  if (typeof p.cwd !== "string" || !p.cwd.startsWith("/")) throw new SpecError("config.json: process.cwd must be an absolute path");
  if (p.env !== undefined) {
    if (!Array.isArray(p.env)) throw new SpecError("config.json: process.env must be an array of KEY=VALUE strings");
    p.env.forEach((e, i) => {
      if (typeof e !== "string") throw new SpecError(`config.json: process.env[${i}] is not a string`);
    });
  }
  if (p.user !== undefined && (!isObject(p.user) || typeof p.user.uid !== "number" || typeof p.user.gid !== "number")) {
    throw new SpecError("config.json: process.user needs numeric uid and gid");
  }

  const r = raw.root;
  if (!isObject(r)) throw new SpecError("config.json: root is missing");
  if (typeof r.path !== "string" || !r.path) throw new SpecError("config.json: root.path missing");

  if (raw.mounts !== undefined) {
    if (!Array.isArray(raw.mounts)) throw new SpecError("config.json: mounts must be an array");
    raw.mounts.forEach((m, i) => {
      if (!isObject(m) || typeof m.destination !== "string") throw new SpecError(`config.json: mounts[${i}].destination missing`);
    });
  }
  if (raw.linux !== undefined && !isObject(raw.linux)) throw new SpecError("config.json: linux must be an object");
  const limit = (raw.linux as SpecLinux | undefined)?.resources?.memory?.limit;
  if (limit !== undefined && limit !== null && typeof limit !== "number") {
    throw new SpecError("config.json: linux.resources.memory.limit must be a number");
  }
  return raw as unknown as Spec;
}

/** "line L column C" from a JSON.parse error (Bun/JSC messages carry no offset; we find one). */
function jsonErrorPosition(text: string, e: Error): string {
  // V8-style "... at position N" if present; else locate by scanning for the first bad prefix.
  const m = /position (\d+)/.exec(e.message);
  let pos = m ? Number(m[1]) : firstBadOffset(text);
  if (pos < 0) pos = text.length;
  const before = text.slice(0, pos);
  const line = before.split("\n").length;
  const col = pos - before.lastIndexOf("\n");
  return `line ${line} column ${col} (${e.message})`;
}

/** Offset where a minimal JSON scanner first fails; -1 if it never does (e.g. truncated). */
function firstBadOffset(s: string): number {
  let i = 0;
  const ws = () => {
    while (i < s.length && " \t\r\n".includes(s[i] as string)) i++;
  };
  const fail = () => {
    throw i;
  };
  const value = (): void => {
    ws();
    const c = s[i];
    if (c === "{") {
      i++;
      ws();
      if (s[i] === "}") {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (s[i] !== '"') fail();
        str();
        ws();
        if (s[i] !== ":") fail();
        i++;
        value();
        ws();
        if (s[i] === ",") {
          i++;
          continue;
        }
        if (s[i] === "}") {
          i++;
          return;
        }
        fail();
      }
    } else if (c === "[") {
      i++;
      ws();
      if (s[i] === "]") {
        i++;
        return;
      }
      for (;;) {
        value();
        ws();
        if (s[i] === ",") {
          i++;
          continue;
        }
        if (s[i] === "]") {
          i++;
          return;
        }
        fail();
      }
    } else if (c === '"') str();
    else {
      const m = /^(-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(s.slice(i));
      if (!m) fail();
      i += (m as RegExpExecArray)[0].length;
    }
  };
  const str = () => {
    i++;
    while (i < s.length && s[i] !== '"') {
      if (s[i] === "\\") i++;
      else if ((s.charCodeAt(i) ?? 0) < 0x20) fail();
      i++;
    }
    if (i >= s.length) fail();
    i++;
  };
  try {
    value();
    ws();
    return i < s.length ? i : -1;
  } catch (pos) {
    return typeof pos === "number" ? pos : -1;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The value of KEY in a KEY=VALUE list (last one wins, like execve's consumers). */
export function envValue(env: string[] | undefined, key: string): string | undefined {
  let out: string | undefined;
  for (const e of env ?? []) if (e.startsWith(`${key}=`)) out = e.slice(key.length + 1);
  return out;
}
