#!/usr/bin/env bash
# Installs the shim where containerd finds it: ${PREFIX:-/usr/local}/bin, with
# libwasmtime.so in ${PREFIX}/lib (the binary looks in ../lib beside itself).
# Restart nothing: containerd runs the new binary for the next container it creates.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
bash scripts/setup.sh
shim=$(bash scripts/build-shim.sh "$PWD/build/bin" containerd-shim-wasmtime-v1)
lib=$(bash scripts/libwasmtime.sh)
install -D -m 0755 "$shim" "$PREFIX/bin/containerd-shim-wasmtime-v1"
# An operator's own libwasmtime (BUNWASI_LIBWASMTIME) is left where it is.
[[ -n ${BUNWASI_LIBWASMTIME:-} ]] || install -D -m 0644 "$lib" "$PREFIX/lib/libwasmtime.so"
[[ -n ${BUNWASI_LIBWASMTIME:-} ]] || install -D -m 0644 "$(dirname "$lib")/libwasmtime.version" "$PREFIX/lib/libwasmtime.version"
echo "installed $PREFIX/bin/containerd-shim-wasmtime-v1"
echo "use it with: ctr run --runtime io.containerd.wasmtime.v1 IMAGE ID"
