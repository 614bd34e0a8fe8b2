#!/usr/bin/env bash
# Builds `containerd`, `ctr` and `containerd-shim-runc-v2` for the containerd versions the
# e2e matrix tests (test/e2e/matrix.test.ts) besides Debian's 1.6, from the Go module proxy,
# into build/containerd/<version>/bin/. The runc shim is there for the CRI suite
# (test/e2e/cri.test.ts): its `runc` handler needs the shim of containerd's own version, and
# Debian's containerd-shim-runc-v2 is 1.6's. Idempotent: only missing binaries are built.
# Prints one bin dir per line.
#
#   bash scripts/containerd-versions.sh            # the pinned versions below
#   bash scripts/containerd-versions.sh v2.3.7     # others (v1.7.x or v2.x)
#
# How: the module source (checked against sum.golang.org by `go mod download`) is
# copied to a temp dir and built as the main module, so its own go.mod and go.sum
# (and 1.7's `exclude` directive, which makes `go install pkg@version` refuse it) apply
# exactly. CGO_ENABLED=0: static binaries, no C headers needed; containerd's cgo-only
# parts (btrfs snapshotter, libseccomp) are left out by their build constraints, and
# nothing the tests use needs them.
#
# Time on a 2-core machine with empty Go module and build caches (~240 module downloads,
# ~1 GB each of module and build cache): 76 s for 1.7.35, 56 s for 2.4.2, 2 min 12 s in all
# (containerd and ctr; the runc shim shares most of their packages). The runc shim alone,
# one compile job (GO_BUILD_JOBS=1, nice 10): 3 s for 1.7.35 and 7 s for 2.4.2 added to
# existing builds, 40 s for 2.4.2 with an empty build cache. Once built, a run only checks
# the binaries exist.
set -euo pipefail
cd "$(dirname "$0")/.."

# Newest 1.7 and newest 2.x release on the proxy when pinned:
#   go list -m -versions github.com/containerd/containerd      (v1.7.x)
#   go list -m -versions github.com/containerd/containerd/v2
PINNED=(v1.7.35 v2.4.2)

export PATH="$PATH:/usr/local/go/bin"
export GOFLAGS=-mod=mod CGO_ENABLED=0
repo=$PWD
log() { echo "containerd-versions: $*" >&2; }

build() {
  local v=$1 mod out
  case $v in
    v1.*) mod=github.com/containerd/containerd ;;
    v2.*) mod=github.com/containerd/containerd/v2 ;;
    *) log "unsupported version $v (want v1.x or v2.x)"; return 1 ;;
  esac
  out=$repo/build/containerd/$v/bin
  local cmds=() b
  for b in containerd ctr containerd-shim-runc-v2; do
    [[ -x $out/$b ]] || cmds+=("./cmd/$b")
  done
  if ((${#cmds[@]} == 0)); then
    echo "$out"
    return 0
  fi
  local tmp t0=$SECONDS
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "chmod -R u+w '$tmp' 2>/dev/null; rm -rf '$tmp'" RETURN
  log "building ${cmds[*]} of containerd $v (module $mod)"
  local src
  src=$(cd "$tmp" && go mod download -json "$mod@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -n $src && -f $src/go.mod ]] || { log "go mod download $mod@$v gave no source dir"; return 1; }
  cp -r "$src" "$tmp/src"
  chmod -R u+w "$tmp/src"
  mkdir -p "$tmp/bin"
  (
    cd "$tmp/src"
    # GO_BUILD_JOBS=1 keeps a build to one compile job on a machine shared with test runs.
    go build ${GO_BUILD_JOBS:+-p "$GO_BUILD_JOBS"} -trimpath \
      -ldflags "-s -w -X $mod/version.Version=$v -X $mod/version.Package=$mod" \
      -o "$tmp/bin/" "${cmds[@]}"
  )
  [[ ! -x $tmp/bin/containerd ]] || "$tmp/bin/containerd" --version >&2
  mkdir -p "$out"
  # One binary at a time: those already there stay as they are.
  for b in "$tmp"/bin/*; do mv -f "$b" "$out/"; done
  log "built ${cmds[*]} of containerd $v in $((SECONDS - t0)) s"
  echo "$out"
}

versions=("$@")
((${#versions[@]})) || versions=("${PINNED[@]}")
for v in "${versions[@]}"; do build "$v"; done
