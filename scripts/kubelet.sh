#!/usr/bin/env bash
# Builds a real `kubelet` (for test/e2e/kubelet*.test.ts: the kubelet running static pods
# on our shim through containerd's CRI plugin) from the Go module proxy into
# build/kubelet/<version>/bin/kubelet. Idempotent: an existing binary is kept. Prints the
# bin dir.
#
#   bash scripts/kubelet.sh            # the pinned version below
#   bash scripts/kubelet.sh v1.34.2    # another v1.x
#
# How: the k8s.io/kubernetes module's go.mod replaces every staging module
# (k8s.io/api, apimachinery, client-go, kubelet, cri-api, …) with ./staging/src/k8s.io/*,
# but those directories are modules of their own and so are not in the module zip: built
# as the main module, the replaces would point at nothing. So we build from a small
# wrapper module instead. Its go.mod requires k8s.io/kubernetes at the version and repeats
# each of those replaces with the published staging module of the matching version
# (k8s.io/kubernetes v1.X.Y ships its staging modules as v0.X.Y), read from kubernetes'
# own go.mod so none is missed. Modules are checked against sum.golang.org as usual.
# CGO_ENABLED=0 and -trimpath: a static binary, as Kubernetes releases the kubelet.
#
# Time on a 2-core machine shared with test runs (load average ~10 meanwhile; nice 10,
# GO_BUILD_JOBS unset), module cache already holding containerd's and cri-tools'
# dependencies (~100 more modules to download), build cache warm from those builds only:
# 8 min 40 s (520 s), ~5 min of CPU; an 80 MB binary. Once built, a run only checks the
# binary exists.
set -euo pipefail
cd "$(dirname "$0")/.."

# Newest v1.34 patch on the proxy when pinned:
#   go list -m -versions k8s.io/kubernetes
PINNED=v1.34.4

export PATH="$PATH:/usr/local/go/bin"
export GOFLAGS=-mod=mod CGO_ENABLED=0
repo=$PWD
log() { echo "kubelet: $*" >&2; }

v=${1:-$PINNED}
[[ $v =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { log "unsupported version $v (want v1.X.Y)"; exit 1; }
minor=${BASH_REMATCH[1]}
staging=v0.$minor.${BASH_REMATCH[2]}
out=$repo/build/kubelet/$v/bin
if [[ -x $out/kubelet ]]; then
  echo "$out"
  exit 0
fi
t0=$SECONDS
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
log "building kubelet $v (module k8s.io/kubernetes, staging modules $staging)"
src=$(cd "$tmp" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -n $src && -f $src/go.mod ]] || { log "go mod download k8s.io/kubernetes@$v gave no source dir"; exit 1; }

mkdir -p "$tmp/wrap" "$tmp/bin"
goversion=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$src/go.mod")
{
  echo "module bunwasi.test/kubelet-build"
  echo
  echo "go $goversion"
  echo
  echo "require k8s.io/kubernetes $v"
  echo
  echo "replace ("
  # `	k8s.io/api => ./staging/src/k8s.io/api` → `	k8s.io/api => k8s.io/api v0.X.Y`
  sed -n "s|^[[:space:]]*\(k8s\.io/[a-z0-9.-]*\) => \./staging/src/k8s\.io/[a-z0-9.-]*$|	\1 => \1 $staging|p" "$src/go.mod"
  echo ")"
} >"$tmp/wrap/go.mod"
n=$(grep -c " => k8s.io/" "$tmp/wrap/go.mod" || true)
((n > 10)) || { log "found only $n staging replaces in kubernetes' go.mod"; exit 1; }
(
  cd "$tmp/wrap"
  # Resolves the rest of the build list (kubernetes' own requires) and writes go.sum.
  go get "k8s.io/kubernetes/cmd/kubelet@$v" >&2
  pkg=k8s.io/component-base/version
  # GO_BUILD_JOBS=1 keeps the build to one compile job on a machine shared with test runs.
  nice -n 10 go build ${GO_BUILD_JOBS:+-p "$GO_BUILD_JOBS"} -trimpath \
    -ldflags "-s -w -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
    -o "$tmp/bin/kubelet" k8s.io/kubernetes/cmd/kubelet
)
"$tmp/bin/kubelet" --version >&2
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$tmp/bin" "$out"
log "built kubelet $v in $((SECONDS - t0)) s"
echo "$out"
