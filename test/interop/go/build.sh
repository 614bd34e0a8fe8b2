#!/usr/bin/env bash
# Builds ttrpc-peer (the Go ttrpc interop/benchmark peer) into ${1:-<repo>/build}.
# Needs only a Go toolchain (>= 1.25, or any Go that may fetch one) and the Go
# module proxy; the protobuf/ttrpc code in echopb/ is pre-generated.
# Skips the build when the binary is newer than every .go file, go.mod and go.sum.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${1:-$(cd "$here/../../.." && pwd)/build}"
bin="$out_dir/ttrpc-peer"

go_bin="$(command -v go || true)"
if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then
  go_bin=/usr/local/go/bin/go
fi
if [[ -z "$go_bin" ]]; then
  echo "build.sh: no Go toolchain found (PATH or /usr/local/go/bin/go)" >&2
  exit 1
fi

if [[ -x "$bin" ]]; then
  newer="$(find "$here" \( -name '*.go' -o -name go.mod -o -name go.sum \) -newer "$bin" -print -quit)"
  if [[ -z "$newer" ]]; then
    echo "$bin is up to date"
    exit 0
  fi
fi

mkdir -p "$out_dir"
tmp="$(mktemp "$out_dir/.ttrpc-peer.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
(
  cd "$here"
  GOFLAGS=-mod=mod GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}" \
    "$go_bin" build -trimpath -o "$tmp" .
)
chmod 755 "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
echo "built $bin"
