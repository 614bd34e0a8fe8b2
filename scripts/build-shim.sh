#!/usr/bin/env bash
# Compiles each shim binary with `bun build --compile` into ${1:-<repo>/build/bin}; prints
# one path per binary. Further arguments pick binaries by name (default: all of them).
# Each binary is its entry file (the one runShim call that names its engine) plus the
# scripts that run on Worker threads (the wasm runner, the compiler)
# and any host-function modules, as extra entry points so the binary carries them.
# libwasmtime stays a file beside it (../lib), shared between processes through the page
# cache instead of a private copy in each.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-$PWD/build/bin}"
shift || true
mkdir -p "$out"
bin=node_modules/.bin/bun
# wasi-shadows.ts is no Worker's script, but a run thread loads it by path on first need, so
# that it is not bundled into the worker's script (whose size every run thread pays for).
workers=(src/engines/wasmtime/worker.ts src/engines/wasmtime/compile-worker.ts src/engines/wasmtime/wasi-shadows.ts)
# The command line (start, delete) and the server are entries of their own, which runShim
# loads by path (src/shim/shim.ts): the executor's bundle then carries neither, nor does
# the server's carry the command line.
cli=(src/shim/main.ts src/shim/serve.ts)

declare -A entries=(
  [containerd-shim-wasmtime-v1]="src/bin/containerd-shim-wasmtime-v1.ts"
  [containerd-shim-customhost-v1]="examples/custom-host/containerd-shim-customhost-v1.ts examples/custom-host/host.ts"
  # Shared mode: the daemon runs the modules (so carries the workers); the thin shim only
  # talks to it and carries none.
  [containerd-wasmtimed]="src/bin/containerd-wasmtimed.ts"
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
  newest=$( (find src examples -name '*.ts' -newer "$target"; find scripts/build-shim.sh -newer "$target") 2>/dev/null | head -1 || true)
  if [[ ! -x $target || -n $newest ]]; then
    # Bytecode: a start of this binary drops from ~30 ms to ~10 ms, and it starts several
    # times for every container. No .env or bunfig.toml autoload: a shim must not take
    # settings from whatever directory containerd starts it in, and looking for them reads
    # the cwd and its parents into Bun's directory cache (measured: +1.1 MiB in every server
    # whose bundle lies under a /tmp of 6000 entries).
    extra=("${workers[@]}")
    [[ -z ${no_workers[$name]:-} ]] || extra=()
    [[ -z ${uses_run_shim[$name]:-} ]] || extra+=("${cli[@]}")
    # shellcheck disable=SC2086 # the entry list is words
    "$bin" build --compile --bytecode --minify --no-compile-autoload-dotenv --no-compile-autoload-bunfig ${entries[$name]} "${extra[@]}" --outfile "$target" >&2
  fi
  echo "$target"
done
