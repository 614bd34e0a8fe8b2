// OCI platform of the running host, in Go's GOOS/GOARCH words (what containerd matches on).

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

const GOARCH: Record<string, string> = {
  x64: "amd64",
  arm64: "arm64",
  arm: "arm",
  ia32: "386",
  ppc64: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
};

export function hostPlatform(): Platform {
  return { os: "linux", architecture: GOARCH[process.arch] ?? process.arch };
}

/** "linux/amd64", "wasi/wasm", "linux/arm64/v8" → Platform. */
export function parsePlatform(s: string): Platform {
  const [os, architecture, variant, ...rest] = s.split("/");
  if (!os || !architecture || rest.length > 0) throw new Error(`bad platform ${JSON.stringify(s)}: want os/arch[/variant]`);
  return variant ? { os, architecture, variant } : { os, architecture };
}
