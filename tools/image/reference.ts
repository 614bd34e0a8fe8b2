// Image names the way containerd stores them after a `ctr pull`: fully qualified
// ("docker.io/library/busybox:latest"). `ctr` itself never normalizes, so the name written into
// the archive is the one `ctr run` must be given.

export interface Reference {
  /** Full name with tag (or digest), e.g. docker.io/library/busybox:latest */
  full: string;
  /** The tag alone ("latest"), for org.opencontainers.image.ref.name; "" for digest references. */
  tag: string;
}

export function normalizeReference(name: string): Reference {
  if (name === "" || /\s/.test(name)) throw new Error(`invalid image name ${JSON.stringify(name)}`);
  let rest = name;
  let digest = "";
  const at = rest.indexOf("@");
  if (at !== -1) {
    digest = rest.slice(at);
    rest = rest.slice(0, at);
  }
  let tag = "";
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  const first = rest.split("/")[0] ?? "";
  const hasDomain = rest.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost");
  if (!hasDomain) rest = rest.includes("/") ? `docker.io/${rest}` : `docker.io/library/${rest}`;
  if (!/^[a-z0-9]/.test(rest)) throw new Error(`invalid image name ${JSON.stringify(name)}`);
  if (!tag && !digest) tag = "latest";
  const full = `${rest}${tag ? `:${tag}` : ""}${digest}`;
  return { full, tag };
}
