#!/usr/bin/env bash
# Compiles each shim binary with `bun build --compile` into ${1:-<repo>/build/bin}; prints
# one path per binary. Further arguments pick binaries by name (default: all of them).
# Each binary is its entry file plus the scripts it loads by path, as extra entry points so
# the binary carries them. A binary of runShim (the wasmtime shim, examples/custom-host) is
# built as any user of the @bunwasi/shim package builds one: with its build helper
# (src/package/bunwasi-build.ts), given the entry and its host-function modules; the helper
# adds the command line, the server and the wasmtime Worker scripts, and fixes the flags.
# libwasmtime stays a file beside it (../lib), shared between processes through the page
# cache instead of a private copy in each.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-$PWD/build/bin}"
shift || true
mkdir -p "$out"
bin=node_modules/.bin/bun
# The shared-mode daemon runs modules, so it carries the wasmtime Worker scripts and the
# shadows a run thread loads by path (src/engines/wasmtime/scripts.ts names them for the
# build helper too).
workers=(src/engines/wasmtime/worker.ts src/engines/wasmtime/compile-worker.ts src/engines/wasmtime/wasi-shadows.ts)

declare -A entries=(
  [containerd-shim-wasmtime-v1]="src/bin/containerd-shim-wasmtime-v1.ts"
  [containerd-shim-customhost-v1]="examples/custom-host/containerd-shim-customhost-v1.ts examples/custom-host/host.ts"
  # Shared mode: the daemon runs the modules (so carries the workers); the thin shim only
  # talks to it and carries none.
  [containerd-wasmtimed]="src/bin/containerd-wasmtimed.ts src/daemon/metrics-server.ts"
  [containerd-shim-wasmtimed-v1]="src/bin/containerd-shim-wasmtimed-v1.ts"
)
declare -A no_workers=([containerd-shim-wasmtimed-v1]=1)
declare -A uses_run_shim=([containerd-shim-wasmtime-v1]=1 [containerd-shim-customhost-v1]=1)
# The executor's C signal handlers, shipped beside libwasmtime in /.bunwasi (build/native).
bash scripts/build-native.sh >/dev/null
names=("$@")
((${#names[@]})) || names=(containerd-shim-wasmtime-v1 containerd-shim-customhost-v1 containerd-wasmtimed containerd-shim-wasmtimed-v1)

for name in "${names[@]}"; do
  [[ -n ${entries[$name]:-} ]] || { echo "build-shim: no binary named $name" >&2; exit 2; }
  target="$out/$name"
  # This script too: a change of build flags must rebuild.
  newest=$( (find src examples -name '*.ts' -not -path '*/dist/*' -newer "$target"; find scripts/build-shim.sh -newer "$target") 2>/dev/null | head -1 || true)
  if [[ ! -x $target || -n $newest ]]; then
    # Bytecode: a start of this binary drops from ~30 ms to ~10 ms, and it starts several
    # times for every container. No .env or bunfig.toml autoload: a shim must not take
    # settings from whatever directory containerd starts it in, and looking for them reads
    # the cwd and its parents into Bun's directory cache (measured: +1.1 MiB in every server
    # whose bundle lies under a /tmp of 6000 entries).
    if [[ -n ${uses_run_shim[$name]:-} ]]; then
      # shellcheck disable=SC2086 # the entry list is words
      "$bin" src/package/bunwasi-build.ts --outfile "$target" ${entries[$name]} >/dev/null
    else
      extra=("${workers[@]}")
      [[ -z ${no_workers[$name]:-} ]] || extra=()
      # shellcheck disable=SC2086 # the entry list is words
      "$bin" build --compile --bytecode --minify --no-compile-autoload-dotenv --no-compile-autoload-bunfig ${entries[$name]} "${extra[@]}" --outfile "$target" >&2
    fi
  fi
  echo "$target"
done
