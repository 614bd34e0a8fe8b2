// Where the shared-mode daemon listens, and where the thin shim looks for it. One
// definition, read by both binaries; the names themselves come from their entry files
// (src/bin/wasmtimed.ts), so nothing here names an engine.

/** The names of one shared-mode pair: the daemon, the thin shim containerd runs, its runtime. */
export interface SharedModeNames {
  /** The daemon's binary, e.g. containerd-wasmtimed. */
  daemon: string;
  /** The thin shim's binary, containerd-shim-<name>-v<N>. */
  thinShim: string;
  /** The runtime name containerd is given (`ctr run --runtime …`). */
  runtime: string;
}

/** Set in containerd's environment when the daemon listens elsewhere than its default. */
export const DAEMON_SOCKET_ENV = "BUNWASI_DAEMON_SOCKET";

/** The daemon's socket unless told otherwise: /run/bunwasi/<daemon name without "containerd-">.sock. */
export function defaultDaemonSocket(daemon: string): string {
  return `/run/bunwasi/${daemon.replace(/^containerd-/, "")}.sock`;
}

/** The socket the thin shim asks: BUNWASI_DAEMON_SOCKET (inherited from containerd), else the default. */
export function daemonSocket(daemon: string, env: Record<string, string | undefined> = process.env): string {
  return env[DAEMON_SOCKET_ENV] || defaultDaemonSocket(daemon);
}
