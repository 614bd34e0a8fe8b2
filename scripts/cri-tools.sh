#!/usr/bin/env bash
# Builds cri-tools from the Go module proxy into build/cri-tools/<version>/bin:
#   crictl  the CRI client test/e2e/cri.test.ts drives containerd's CRI plugin with;
#   critest the CRI validation suite (a Ginkgo test binary, `go test -c` as cri-tools'
#           Makefile builds it) test/e2e/critest.test.ts runs against each handler;
#   ginkgo  the Ginkgo CLI at the version cri-tools' go.mod pins: critest --parallel=N
#           re-executes itself through `ginkgo` found on PATH.
# Idempotent: binaries already there are kept, only missing ones are built. Prints the bin dir.
#
#   bash scripts/cri-tools.sh            # the pinned version below
#   bash scripts/cri-tools.sh v1.34.0    # another
#
# How: as scripts/containerd-versions.sh does it. `go mod download` fetches the module
# source (checked against sum.golang.org); it is copied to a temp dir and built as the
# main module so cri-tools' own go.mod and go.sum apply (ginkgo too: its version comes from
# that go.mod). The module zip carries no vendor/ folder, so -mod=mod (the release Makefile
# builds with -mod=vendor from git). CGO_ENABLED=0 and -trimpath as in that Makefile.
#
# Time on a 2-core machine shared with test runs, one compile job (GO_BUILD_JOBS=1, nice 10),
# module cache already holding containerd's dependencies (~30 more modules to download):
# crictl 37 s with the build cache containerd's builds left, 1 min 45 s with an empty build
# cache; critest and ginkgo then 35 s more (4 more modules: nri, filepath-securejoin, sprig,
# pprof). Once built, a run only checks the binaries exist.
set -euo pipefail
cd "$(dirname "$0")/.."

# The version the suites were written against (go list -m -versions sigs.k8s.io/cri-tools).
PINNED=v1.37.0

export PATH="$PATH:/usr/local/go/bin"
export GOFLAGS=-mod=mod CGO_ENABLED=0
repo=$PWD
log() { echo "cri-tools: $*" >&2; }

v=${1:-$PINNED}
mod=sigs.k8s.io/cri-tools
out=$repo/build/cri-tools/$v/bin
missing=()
for b in crictl critest ginkgo; do [[ -x $out/$b ]] || missing+=("$b"); done
if ((${#missing[@]} == 0)); then
  echo "$out"
  exit 0
fi
t0=$SECONDS
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
log "building ${missing[*]} $v (module $mod)"
src=$(cd "$tmp" && go mod download -json "$mod@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -n $src && -f $src/go.mod ]] || { log "go mod download $mod@$v gave no source dir"; exit 1; }
cp -r "$src" "$tmp/src"
chmod -R u+w "$tmp/src"
mkdir -p "$tmp/bin"
ldflags="-s -w -X $mod/pkg/version.Version=${v#v}"
jobs=(${GO_BUILD_JOBS:+-p "$GO_BUILD_JOBS"})
(
  cd "$tmp/src"
  # GO_BUILD_JOBS=1 keeps the build to one compile job on a machine shared with test runs.
  for b in "${missing[@]}"; do
    case $b in
      crictl) go build "${jobs[@]}" -trimpath -ldflags "$ldflags" -o "$tmp/bin/crictl" ./cmd/crictl ;;
      critest) go test "${jobs[@]}" -c -trimpath -ldflags "$ldflags" -o "$tmp/bin/critest" ./cmd/critest ;;
      ginkgo) go build "${jobs[@]}" -trimpath -ldflags "-s -w" -o "$tmp/bin/ginkgo" github.com/onsi/ginkgo/v2/ginkgo ;;
    esac
  done
)
[[ ! -x $tmp/bin/crictl ]] || "$tmp/bin/crictl" --version >&2
[[ ! -x $tmp/bin/critest ]] || "$tmp/bin/critest" --version >&2
[[ ! -x $tmp/bin/ginkgo ]] || "$tmp/bin/ginkgo" version >&2
mkdir -p "$out"
# One binary at a time, each by rename: a binary already there (in use by a test) stays whole.
for b in "${missing[@]}"; do mv "$tmp/bin/$b" "$out/$b"; done
log "built ${missing[*]} $v in $((SECONDS - t0)) s"
echo "$out"
