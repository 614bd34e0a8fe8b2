// containerd writes socket addresses either as plain paths or as unix:// URLs (a shim's
// address, TTRPC_ADDRESS); every layer that connects needs the path.

/** The filesystem path of a unix socket address, with or without the unix:// scheme. */
export function socketPath(address: string): string {
  return address.startsWith("unix://") ? address.slice("unix://".length) : address;
}
