// The files CRI mounts into every container of a pod when they are in the pod's directory of
// CRI's: /etc/hostname, /etc/hosts and /etc/resolv.conf. containerd's podsandbox controller
// writes them beside a pause container; for a pod of the shim sandboxer CRI leaves them to the
// sandbox and mounts only those it finds (internal/cri/server/container_create.go,
// linuxContainerMounts). So CreateSandbox writes them as that controller would (the pod's
// hostname, the node's hosts file, the pod's DNS settings or else the node's resolv.conf), and
// ShutdownSandbox removes them. /dev/shm is not made: a container then has a tmpfs of its own
// there (containerd's default spec), not one shared by the pod.
//
// Where: <containerd root>/io.containerd.grpc.v1.cri/sandboxes/<id>, CRI's sandbox root (its
// runtime plugin keeps that name for its directory). containerd's root is where the bundle's
// `work` link points: <root>/<plugin>/<namespace>/<id>, the plugin being the shim sandbox
// controller's (io.containerd.sandbox.controller.v1.shim) or the task runtime's.

import { copyFileSync, mkdirSync, readlinkSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { hostname as nodeHostname } from "node:os";
import { basename, dirname, isAbsolute, join } from "node:path";
import type { Logger } from "./task-host.ts";

const CRI_ROOT = "io.containerd.grpc.v1.cri";
const FILES = ["hostname", "hosts", "resolv.conf"] as const;

/** What the files say: PodSandboxConfig's hostname and DNS settings. */
export interface PodFilesConfig {
  hostname: string;
  dns?: { servers: string[]; searches: string[]; options: string[] };
}

/**
 * CRI's directory of sandbox `id`, from containerd's bundle of it; undefined when the bundle has
 * no `work` link of containerd's layout: nothing is written then, and `log` says why (CRI then
 * mounts none of the files: the containers see their image's own, if any).
 */
export function criSandboxDir(bundle: string, id: string, log: Logger): string | undefined {
  const notWritten = (why: string) => {
    log(`sandbox ${id}: the pod's ${FILES.join(", ")} not written (CRI mounts none of them): ${why}`, "warning");
    return undefined;
  };
  let work: string;
  try {
    work = readlinkSync(join(bundle, "work"));
  } catch (e) {
    return notWritten(`no work link in the bundle to find containerd's root from (${String(e)})`);
  }
  if (!isAbsolute(work) || !work.endsWith(`/${id}`)) {
    return notWritten(`the bundle's work link points to ${work}, not to <containerd root>/<plugin>/<namespace>/${id}`);
  }
  const plugin = dirname(dirname(work));
  if (!basename(plugin).startsWith("io.containerd.")) {
    return notWritten(`the bundle's work link points to ${work}, whose ${basename(plugin)} is not a containerd plugin's directory`);
  }
  return join(dirname(plugin), CRI_ROOT, "sandboxes", id);
}

/** resolv.conf from CRI's DNSConfig, as containerd writes it (search, nameserver lines, options). */
export function resolvConf(dns: NonNullable<PodFilesConfig["dns"]>): string {
  let out = "";
  if (dns.searches.length) out += `search ${dns.searches.join(" ")}\n`;
  for (const s of dns.servers) out += `nameserver ${s}\n`;
  if (dns.options.length) out += `options ${dns.options.join(" ")}\n`;
  return out;
}

/** Writes the pod's files in `dir` (made if missing). */
export function writePodFiles(dir: string, c: PodFilesConfig): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  writeFileSync(join(dir, "hostname"), `${c.hostname || nodeHostname()}\n`, { mode: 0o644 });
  copyFileSync("/etc/hosts", join(dir, "hosts"));
  if (c.dns) writeFileSync(join(dir, "resolv.conf"), resolvConf(c.dns), { mode: 0o644 });
  else copyFileSync("/etc/resolv.conf", join(dir, "resolv.conf"));
}

/** Removes what writePodFiles wrote, and the directory once empty. */
export function removePodFiles(dir: string): void {
  for (const f of FILES) rmSync(join(dir, f), { force: true });
  try {
    rmdirSync(dir);
  } catch {
    // Not empty (CRI's own files), or gone already: left to CRI.
  }
}
