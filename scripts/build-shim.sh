#!/usr/bin/env bash
# Compiles our programs with `bun build --compile` into ${1:-<repo>/build/bin}: one binary,
# bunwasi, and beside it a symbolic link to it under each program's name (containerd finds a
# shim by its name on PATH; the binary runs the program it is started as: src/bin/bunwasi.ts,
# src/bin/programs.ts). One Bun runtime (~107 MB) on disk instead of one per program. The
# custom-host example (examples/custom-host) is a binary of its own: it stands for a user's
# project built with the @bunwasi/shim package, another product than ours.
# Prints one path per name asked for. Further arguments pick names (default: all of them):
# a program's name (its link; the binary is built if it is not current), bunwasi, or
# containerd-shim-customhost-v1.
#
# Both are built as any user of the @bunwasi/shim package builds a binary: with its build
# helper (src/package/bunwasi-build.ts), given the entry and the scripts it loads by path (the
# programs' entries; the example's host-function module). The helper adds the command line,
# the server and the wasmtime Worker scripts, and fixes the flags (bytecode, no .env or
# bunfig.toml autoload: src/package/build.ts says why). libwasmtime stays a file beside it
# (../lib), shared between processes through the page cache instead of a private copy in each.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-$PWD/build/bin}"
shift || true
mkdir -p "$out"
bin=node_modules/.bin/bun

ONE=bunwasi
# The one binary's programs: src/bin/programs.ts names the same (a unit test checks).
PROGRAMS=(containerd-shim-wasmtime-v1 containerd-shim-wasmtimed-v1 containerd-wasmtimed)
# The daemon's metrics endpoint is loaded by path when asked for (src/daemon/scripts.ts names it).
ONE_ENTRIES=(src/bin/bunwasi.ts src/bin/containerd-shim-wasmtime-v1.ts src/bin/containerd-shim-wasmtimed-v1.ts src/bin/containerd-wasmtimed.ts src/daemon/metrics-server.ts)
EXAMPLE=containerd-shim-customhost-v1
EXAMPLE_ENTRIES=(examples/custom-host/containerd-shim-customhost-v1.ts examples/custom-host/host.ts)

# The executor's C signal handlers, shipped beside libwasmtime in /.bunwasi (build/native).
bash scripts/build-native.sh >/dev/null

# Builds $out/$1 from the entries that follow, unless it is newer than every source (and this
# script: a change of build flags must rebuild).
build() {
  local target=$out/$1
  shift
  local newest
  newest=$( (find src examples -name '*.ts' -not -path '*/dist/*' -newer "$target"; find scripts/build-shim.sh -newer "$target") 2>/dev/null | head -1 || true)
  # A regular file, not a link: an older build left a binary per program under these names.
  if [[ ! -x $target || -L $target || -n $newest ]]; then
    rm -f "$target"
    "$bin" src/package/bunwasi-build.ts --outfile "$target" "$@" >/dev/null
  fi
}

is_program() {
  local p
  for p in "${PROGRAMS[@]}"; do [[ $1 == "$p" ]] && return 0; done
  return 1
}

names=("$@")
((${#names[@]})) || names=("${PROGRAMS[@]}" "$EXAMPLE")
built_one=
for name in "${names[@]}"; do
  if [[ $name == "$ONE" ]] || is_program "$name"; then
    [[ -n $built_one ]] || build "$ONE" "${ONE_ENTRIES[@]}"
    built_one=1
    if [[ $name != "$ONE" ]]; then
      # Relative, so the directory can move; replaced by rename, so a concurrent start never
      # finds the name missing.
      if [[ ! -L $out/$name || $(readlink "$out/$name") != "$ONE" ]]; then
        ln -sfn "$ONE" "$out/.$name.$$"
        mv -Tf "$out/.$name.$$" "$out/$name"
      fi
    fi
  elif [[ $name == "$EXAMPLE" ]]; then
    build "$EXAMPLE" "${EXAMPLE_ENTRIES[@]}"
  else
    echo "build-shim: no binary named $name" >&2
    exit 2
  fi
  echo "$out/$name"
done
