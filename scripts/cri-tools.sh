#!/usr/bin/env bash
# Builds `crictl` (the CRI client test/e2e/cri.test.ts drives containerd's CRI plugin with)
# from the Go module proxy into build/cri-tools/<version>/bin/crictl. Idempotent: an
# existing binary is kept. Prints the bin dir.
#
#   bash scripts/cri-tools.sh            # the pinned version below
#   bash scripts/cri-tools.sh v1.34.0    # another
#
# How: as scripts/containerd-versions.sh does it. `go mod download` fetches the module
# source (checked against sum.golang.org); it is copied to a temp dir and built as the
# main module so cri-tools' own go.mod and go.sum apply. The module zip carries no
# vendor/ folder, so -mod=mod (the release Makefile builds with -mod=vendor from git).
# CGO_ENABLED=0 and -trimpath as in that Makefile: a static binary.
#
# Time on a 2-core machine shared with test runs, one compile job (GO_BUILD_JOBS=1, nice 10),
# module cache already holding containerd's dependencies (~30 more modules to download):
# 37 s with the build cache containerd's builds left, 1 min 45 s with an empty build cache.
# Once built, a run only checks the binary exists.
set -euo pipefail
cd "$(dirname "$0")/.."

# The version the suite was written against (go list -m -versions sigs.k8s.io/cri-tools).
PINNED=v1.37.0

export PATH="$PATH:/usr/local/go/bin"
export GOFLAGS=-mod=mod CGO_ENABLED=0
repo=$PWD
log() { echo "cri-tools: $*" >&2; }

v=${1:-$PINNED}
mod=sigs.k8s.io/cri-tools
out=$repo/build/cri-tools/$v/bin
if [[ -x $out/crictl ]]; then
  echo "$out"
  exit 0
fi
t0=$SECONDS
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
log "building crictl $v (module $mod)"
src=$(cd "$tmp" && go mod download -json "$mod@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -n $src && -f $src/go.mod ]] || { log "go mod download $mod@$v gave no source dir"; exit 1; }
cp -r "$src" "$tmp/src"
chmod -R u+w "$tmp/src"
mkdir -p "$tmp/bin"
(
  cd "$tmp/src"
  # GO_BUILD_JOBS=1 keeps the build to one compile job on a machine shared with test runs.
  go build ${GO_BUILD_JOBS:+-p "$GO_BUILD_JOBS"} -trimpath \
    -ldflags "-s -w -X $mod/pkg/version.Version=${v#v}" \
    -o "$tmp/bin/crictl" ./cmd/crictl
)
"$tmp/bin/crictl" --version >&2
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$tmp/bin" "$out"
log "built crictl $v in $((SECONDS - t0)) s"
echo "$out"
