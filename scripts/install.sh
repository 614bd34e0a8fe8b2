#!/usr/bin/env bash
# Installs bunwasi on a node, and nothing else: its one binary under its three program names,
# the libraries it loads,
# the shared-mode daemon's systemd unit and containerd config snippets. It never installs,
# replaces or configures containerd or runc, runs no package manager and builds nothing:
# build first (scripts/build-release.sh, on this machine or a build machine with this checkout).
#
#   [DESTDIR=/stage] [PREFIX=/usr/local] [SYSTEMD_UNIT_DIR=/etc/systemd/system] bash scripts/install.sh
#   ... bash scripts/install.sh --uninstall
#
# What lands (PREFIX=/usr/local; DESTDIR, if set, is put in front of every path):
#   $PREFIX/lib/bunwasi/<version>-<digest>/bin/   bunwasi: the one binary of all three programs
#                                                (it runs the one it is started as: src/bin/programs.ts)
#   $PREFIX/lib/bunwasi/<version>-<digest>/lib/   libwasmtime.so (+ .version), libbunwasi-kill.so,
#                                                libbunwasi-pool.so, libbunwasi_http.so (+ .version)
#   $PREFIX/bin/<each program>                   containerd-shim-wasmtime-v1, containerd-wasmtimed,
#                                                containerd-shim-wasmtimed-v1: a symlink to that bunwasi
#   $PREFIX/share/bunwasi/containerd-1.x.toml    CRI runtimes wasmtime and wasmtimed, 1.6/1.7
#   $PREFIX/share/bunwasi/containerd-2.x.toml    the same for 2.x
#   $SYSTEMD_UNIT_DIR/containerd-wasmtimed.service
#
# Why a directory per build: an upgrade adds a new one and swaps the symlinks (each a rename),
# so a running shim server or daemon keeps its own binary and libraries (a binary finds them in
# ../lib beside its real path) and never meets "text file busy" or a half-written file. Older
# builds are kept for the servers still running them; --uninstall removes them all.
# The libraries stay in that private directory, out of the dynamic linker's path: no other
# program on the node loads them, and a libwasmtime.so of the operator's in $PREFIX/lib is
# never replaced.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
unit_dir=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}

die() {
  echo "install.sh: $*" >&2
  exit 1
}
[[ $PREFIX == /* ]] || die "PREFIX must be an absolute path (got $PREFIX)"
[[ $unit_dir == /* ]] || die "SYSTEMD_UNIT_DIR must be an absolute path (got $unit_dir)"
action=install
case ${1:-} in
  "") ;;
  --uninstall) action=uninstall ;;
  *) die "usage: [DESTDIR=…] [PREFIX=…] [SYSTEMD_UNIT_DIR=…] bash scripts/install.sh [--uninstall]" ;;
esac

ONE=bunwasi
# The names it answers to (src/bin/programs.ts names the same; a unit test checks).
PROGRAMS=(containerd-shim-wasmtime-v1 containerd-wasmtimed containerd-shim-wasmtimed-v1)
# Each library and the file beside it that names its version, as the builds leave them.
LIBS=(build/lib/libwasmtime.so build/lib/libwasmtime.version build/native/libbunwasi-kill.so build/native/libbunwasi-pool.so
  build/http-host/libbunwasi_http.so build/http-host/libbunwasi_http.version)
SNIPPETS=(containerd-1.x.toml containerd-2.x.toml)
UNIT=containerd-wasmtimed.service
# The unit says who wrote it; --uninstall removes only a unit that says so.
UNIT_MARK="Installed by scripts/install.sh"

root=$DESTDIR$PREFIX
units=$DESTDIR$unit_dir
store=$root/lib/bunwasi
reload_systemd() {
  # Only for the real thing: not into a DESTDIR or a unit directory of the caller's choosing.
  if [[ -z $DESTDIR && -z ${SYSTEMD_UNIT_DIR:-} && -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl daemon-reload || echo "install.sh: systemctl daemon-reload failed; run it yourself" >&2
  fi
}

if [[ $action == uninstall ]]; then
  for b in "${PROGRAMS[@]}"; do
    link=$root/bin/$b
    if [[ -L $link && $(readlink "$link") == ../lib/bunwasi/* ]]; then
      rm -f "$link"
      echo "removed $link"
    elif [[ -e $link ]]; then
      echo "left $link: not a link this script made" >&2
    fi
  done
  if [[ -d $store ]]; then
    rm -rf "$store"
    echo "removed $store (running shims and daemons keep their open files until they end)"
  fi
  for s in "${SNIPPETS[@]}"; do
    [[ ! -e $root/share/bunwasi/$s ]] || { rm -f "$root/share/bunwasi/$s" && echo "removed $root/share/bunwasi/$s"; }
  done
  [[ ! -d $root/share/bunwasi ]] || rmdir --ignore-fail-on-non-empty "$root/share/bunwasi"
  if [[ -f $units/$UNIT ]]; then
    if grep -q "$UNIT_MARK" "$units/$UNIT"; then
      rm -f "$units/$UNIT"
      echo "removed $units/$UNIT (a running daemon goes on until stopped: systemctl stop containerd-wasmtimed)"
      reload_systemd
    else
      echo "left $units/$UNIT: not written by this script" >&2
    fi
  fi
  echo "containerd's config still names the runtimes if you added them: remove those lines yourself"
  exit 0
fi

# What the build made, and that it is current: this script builds nothing.
sources=("build/bin/$ONE" "${LIBS[@]}")
for f in "${sources[@]}"; do
  [[ -f $repo/$f && ! -L $repo/$f ]] || die "$repo/$f is missing: build first with bash scripts/build-release.sh"
done
newer=$(find "$repo/src" -name '*.ts' -newer "$repo/build/bin/$ONE" -print -quit)
[[ -z $newer ]] || die "$repo/build/bin/$ONE is older than $newer: rebuild with bash scripts/build-release.sh"

# The build's name: the package version and a digest of every file installed from it, so the
# same build installs into the same directory (a second run changes nothing) and two builds
# never share one.
version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$repo/package.json")
[[ -n $version ]] || die "cannot read the version from $repo/package.json"
digest=$(cd "$repo" && sha256sum "${sources[@]}" | sed 's|  .*/|  |' | sha256sum | cut -c1-12)
build=$version-$digest
dir=$store/$build

mkdir -p "$root/bin" "$store" "$root/share/bunwasi" "$units"
if [[ ! -d $dir ]]; then
  # Made whole beside, then renamed into place: a directory there is always complete.
  stage=$(mktemp -d "$store/.staging.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  chmod 0755 "$stage"
  mkdir "$stage/bin" "$stage/lib"
  install -m 0755 "$repo/build/bin/$ONE" "$stage/bin/$ONE"
  for f in "${LIBS[@]}"; do
    # The .so files keep their execute bits: an executor directory hard-links them, and a
    # mode that is not 0755 there would be changed on the shared inode.
    case $f in *.so) mode=0755 ;; *) mode=0644 ;; esac
    install -m "$mode" "$repo/$f" "$stage/lib/$(basename "$f")"
  done
  mv -T "$stage" "$dir"
  trap - EXIT
fi

# Writes stdin to $1 by rename, so a reader never sees half a file.
put() {
  local tmp
  tmp=$(mktemp "$(dirname "$1")/.$(basename "$1").XXXXXX")
  cat > "$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$1"
}
# Each name links to the binary itself: containerd runs a shim by the path it finds on PATH
# (or runtime_path), the unit runs the daemon by path, and the binary picks its program by
# that name (its argv[0]), not by the file's.
for b in "${PROGRAMS[@]}"; do
  tmp=$root/bin/.$b.$$
  ln -sfn "../lib/bunwasi/$build/bin/$ONE" "$tmp"
  mv -Tf "$tmp" "$root/bin/$b"
done
for s in "${SNIPPETS[@]}"; do
  sed "s|@PREFIX@|$PREFIX|g" "$repo/scripts/containerd-config/$s" | put "$root/share/bunwasi/$s"
done
sed "s|@PREFIX@|$PREFIX|g" "$repo/scripts/systemd/$UNIT" | put "$units/$UNIT"
reload_systemd

echo "installed bunwasi $build: $PREFIX/bin/{$(
  IFS=,
  echo "${PROGRAMS[*]}"
)} -> $PREFIX/lib/bunwasi/$build/bin/$ONE"
echo "installed $unit_dir/$UNIT (not enabled; shared mode: systemctl enable --now containerd-wasmtimed)"
echo "containerd 2.x: add to /etc/containerd/config.toml: imports = [\"$PREFIX/share/bunwasi/containerd-2.x.toml\"]; restart containerd"
echo "containerd 1.6/1.7: append $PREFIX/share/bunwasi/containerd-1.x.toml to /etc/containerd/config.toml (not imports: 1.x would drop the file's own CRI section); restart containerd"
echo "then: ctr run --runtime io.containerd.wasmtime.v1 IMAGE ID, or a RuntimeClass with handler wasmtime (or wasmtimed)"
others=$(find "$store" -mindepth 1 -maxdepth 1 -type d ! -name "$build" ! -name '.staging.*' -printf '%f ' 2>/dev/null)
[[ -z $others ]] || echo "older builds kept for the servers still running them: $others(bash scripts/install.sh --uninstall, then install, removes them)"
