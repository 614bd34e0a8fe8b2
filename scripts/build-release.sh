#!/usr/bin/env bash
# Builds what scripts/install.sh puts on a node, idempotently, installing only the build tools
# that are missing: Bun and the npm toolchain (npm ci, into node_modules), clang (the kill
# library) and pip (the libwasmtime wheel from PyPI) through apt. cargo (the wasi:http host
# library) must be there already (rustup; Rust >= 1.95). Nothing here installs or touches
# containerd or runc; the development setup (test toolchains, containerd builds, a kubelet)
# is scripts/setup.sh.
#
#   bash scripts/build-release.sh && PREFIX=/usr/local bash scripts/install.sh
#
# Products, where install.sh takes them from:
#   build/bin/bunwasi (and beside it the links containerd-shim-wasmtime-v1, containerd-wasmtimed,
#   containerd-shim-wasmtimed-v1: install.sh makes its own)                  (scripts/build-shim.sh)
#   build/lib/libwasmtime.so, libwasmtime.version      (scripts/libwasmtime.sh)
#   build/native/libbunwasi-kill.so, libbunwasi-pool.so (scripts/build-native.sh)
#   build/http-host/libbunwasi_http.so, .version       (scripts/http-host.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "build-release: $*" >&2; }

missing=()
command -v clang >/dev/null || missing+=(clang)
command -v npm >/dev/null || missing+=(npm)
pip3 --version >/dev/null 2>&1 || pip --version >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
  log "installing build tools: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { log "cargo not found: install Rust (rustup, Rust >= 1.95) for the wasi:http host library"; exit 1; }
if [[ ! -x node_modules/.bin/bun || package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "installing npm packages (Bun)"
  npm ci --no-audit --no-fund --loglevel=error
fi

bash scripts/build-shim.sh "$PWD/build/bin" containerd-shim-wasmtime-v1 containerd-wasmtimed containerd-shim-wasmtimed-v1
# The pinned libwasmtime, whatever BUNWASI_LIBWASMTIME says: that setting is the node's, at run time.
BUNWASI_LIBWASMTIME='' bash scripts/libwasmtime.sh
bash scripts/build-native.sh
bash scripts/http-host.sh
log "built; install with: PREFIX=/usr/local bash scripts/install.sh"
