// The containerds an e2e suite runs on: Debian's 1.6 and the 2.x that
// scripts/containerd-versions.sh pins (and builds, with its own runc shim, into
// build/containerd/<version>/bin). A suite parameterized by CONTAINERDS runs each case on both.
//
//   for (const c of CONTAINERDS) describe(`… containerd ${c.name}`, () => { … shimEnv({ binary: c.binary }) … });

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { containerdMajor } from "./containerd.ts";

const REPO = join(import.meta.dir, "../..");

/** The 2.x that scripts/containerd-versions.sh pins (its PINNED=(…) line), e.g. "v2.4.2". */
export function pinned2x(): string {
  const script = readFileSync(join(REPO, "scripts/containerd-versions.sh"), "utf8");
  const v = /^PINNED=\(([^)]*)\)/m
    .exec(script)?.[1]
    ?.trim()
    .split(/\s+/)
    .find((x) => x.startsWith("v2."));
  if (!v) throw new Error("scripts/containerd-versions.sh pins no 2.x");
  return v;
}

export interface ContainerdVersion {
  /** "1.6" or the pinned tag ("v2.4.2"): what a test's name says. */
  readonly name: string;
  readonly binary: string;
}

/** Debian's containerd 1.6 (the package's). */
export const CONTAINERD_1_6: ContainerdVersion = { name: "1.6", binary: "/usr/bin/containerd" };
/** The pinned 2.x, built by scripts/containerd-versions.sh. */
export const CONTAINERD_2X: ContainerdVersion = { name: pinned2x(), binary: join(REPO, "build/containerd", pinned2x(), "bin/containerd") };
/** Debian's 1.6, then the pinned 2.x. */
export const CONTAINERDS: readonly ContainerdVersion[] = [CONTAINERD_1_6, CONTAINERD_2X];

/**
 * What a containerd needs on its PATH, besides our shims, to run a native container (a pod's
 * pause, a busybox): 2.x the runc shim of its own version, built beside it; 1.6 Debian's, which
 * its package installs in /usr/bin (on PATH already).
 */
export function runcShimPath(binary: string): string[] {
  if (containerdMajor(binary) < 2) return [];
  const runcShim = join(dirname(binary), "containerd-shim-runc-v2");
  if (!existsSync(runcShim)) throw new Error(`${runcShim} is missing: run scripts/containerd-versions.sh`);
  return [dirname(binary)];
}
