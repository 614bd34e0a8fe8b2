// Where the shared-mode daemon listens, and where the thin shim looks for it. One
// definition, read by both binaries.

/** The daemon's socket unless told otherwise (`--socket`, BUNWASI_DAEMON_SOCKET). */
export const DEFAULT_DAEMON_SOCKET = "/run/bunwasi/wasmtimed.sock";

/** The runtime name containerd is given for shared mode. */
export const SHARED_RUNTIME = "io.containerd.wasmtimed.v1";

/** The socket the thin shim asks: BUNWASI_DAEMON_SOCKET (inherited from containerd), else the default. */
export function daemonSocket(env: Record<string, string | undefined> = process.env): string {
  return env.BUNWASI_DAEMON_SOCKET || DEFAULT_DAEMON_SOCKET;
}
