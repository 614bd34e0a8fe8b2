// The node's key for compiled code (docs/ARCHITECTURE.md, "Compiled code we trust"). A compiled
// artifact is native code: a node loads one only if it compiled it itself, which it proves with
// an HMAC under this key over the artifact's compile key and its bytes. The key is 32 random
// bytes in a file only root reads (beside the compile cache: /var/lib/bunwasi/cache.key), made
// on first use when the install did not make it. Only trusted processes read it: the shim
// server and the daemon. The executor (in the container, as the container's user) never does:
// it maps the one file the shim checked and bound into the container.

import { closeSync, constants, fstatSync, linkSync, mkdirSync, openSync, readSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

const KEY_BYTES = 32;
/** What a MAC is of: this label, the compile key, then the artifact's bytes. */
const DOMAIN = "bunwasi compiled artifact v1\0";

export class NodeKeyError extends Error {
  override name = "NodeKeyError";
}

/** The key in `file`, made (atomically, readable by its owner only) if there is none. */
export class NodeKey {
  private key: Uint8Array | undefined;

  private constructor(readonly file: string) {}

  private static readonly known = new Map<string, NodeKey>();

  /** One per file and process: read once, on first use. */
  static at(file: string): NodeKey {
    let k = NodeKey.known.get(file);
    if (!k) NodeKey.known.set(file, (k = new NodeKey(file)));
    return k;
  }

  /**
   * A MAC of `compileKey` and the bytes the caller feeds to the hasher returned (update() it in
   * slices, then digest("hex")). Throws NodeKeyError when the key file cannot be trusted.
   */
  hasher(compileKey: string): Bun.CryptoHasher {
    this.key ??= loadOrMake(this.file);
    return new Bun.CryptoHasher("sha256", this.key).update(`${DOMAIN}${compileKey}\0`);
  }
}

function loadOrMake(file: string): Uint8Array {
  try {
    return readKey(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
  // Written whole under a name of our own, then linked into place: link(2) fails when another
  // process made the key meanwhile, and then both use that one.
  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  writeFileSync(tmp, crypto.getRandomValues(new Uint8Array(KEY_BYTES)), { mode: 0o600, flag: "wx" });
  try {
    linkSync(tmp, file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  } finally {
    unlinkSync(tmp);
  }
  return readKey(file);
}

/** The key, if its file is ours, a regular file, readable by no one else and of the right size. */
function readKey(file: string): Uint8Array {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    const euid = process.geteuid?.() ?? 0;
    if (!st.isFile()) throw new NodeKeyError(`the node key ${file} is not a regular file`);
    if (st.uid !== euid) throw new NodeKeyError(`the node key ${file} is owned by uid ${st.uid}, not ${euid}`);
    if ((st.mode & 0o077) !== 0)
      throw new NodeKeyError(
        `the node key ${file} has mode ${(st.mode & 0o777).toString(8)}: others may read it (remove it to make a new one)`,
      );
    if (st.size !== KEY_BYTES) throw new NodeKeyError(`the node key ${file} is ${st.size} bytes, not ${KEY_BYTES}`);
    const key = new Uint8Array(KEY_BYTES);
    if (readSync(fd, key, 0, KEY_BYTES, 0) !== KEY_BYTES) throw new NodeKeyError(`the node key ${file}: short read`);
    return key;
  } finally {
    closeSync(fd);
  }
}
