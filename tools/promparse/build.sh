#!/usr/bin/env bash
# Builds promparse (Prometheus' text parser on stdin, JSON out: ./main.go) into
# ${1:-<repo>/build}. Needs a Go toolchain (PATH or /usr/local/go/bin/go) and the Go module
# proxy. Skips the build when the binary is newer than main.go, go.mod and go.sum.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${1:-$(cd "$here/../.." && pwd)/build}"
bin="$out_dir/promparse"

go_bin="$(command -v go || true)"
[[ -n "$go_bin" || ! -x /usr/local/go/bin/go ]] || go_bin=/usr/local/go/bin/go
if [[ -z "$go_bin" ]]; then
  echo "promparse/build.sh: no Go toolchain found (PATH or /usr/local/go/bin/go)" >&2
  exit 1
fi

if [[ -x "$bin" && -z "$(find "$here" \( -name '*.go' -o -name go.mod -o -name go.sum \) -newer "$bin" -print -quit)" ]]; then
  echo "$bin is up to date"
  exit 0
fi

mkdir -p "$out_dir"
tmp="$(mktemp "$out_dir/.promparse.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
(
  cd "$here"
  GOFLAGS=-mod=mod GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}" "$go_bin" build -trimpath -o "$tmp" .
)
chmod 755 "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
echo "built $bin"
