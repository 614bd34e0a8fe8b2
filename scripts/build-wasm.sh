#!/usr/bin/env bash
# Build the test wasm modules from test/wasm/ into ${1:-<repo>/build/wasm}.
# C sources: clang --target=wasm32-wasi against Debian's wasi-libc (headers in
# /usr/include/wasm32-wasi, libs in /usr/lib/wasm32-wasi, i.e. sysroot /usr;
# override with WASI_SYSROOT). WAT sources: wat2wasm (wabt).
# Idempotent: a target is rebuilt only when its source is newer.
# Needs (Debian): clang lld wasi-libc libclang-rt-14-dev-wasm32 wabt
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/test/wasm"
OUT="${1:-$REPO/build/wasm}"
CC="${WASI_CC:-clang}"
if [[ -z "${WASI_SYSROOT:-}" ]]; then
  for d in /usr/share/wasi-sysroot /opt/wasi-sdk/share/wasi-sysroot /usr; do
    if [[ -f "$d/lib/wasm32-wasi/libc.a" ]]; then WASI_SYSROOT="$d"; break; fi
  done
fi
: "${WASI_SYSROOT:?wasi-libc not found (apt-get install wasi-libc or set WASI_SYSROOT)}"
command -v "$CC" >/dev/null || { echo "build-wasm.sh: $CC not found (apt-get install clang lld)" >&2; exit 1; }
command -v wat2wasm >/dev/null || { echo "build-wasm.sh: wat2wasm not found (apt-get install wabt)" >&2; exit 1; }

mkdir -p "$OUT"
build() { # src out cmd...
  local src="$1" out="$2"; shift 2
  if [[ -f "$out" && "$out" -nt "$src" && "$out" -nt "${BASH_SOURCE[0]}" ]]; then return; fi
  local tmp="$out.tmp.$$"
  "$@" -o "$tmp"
  mv -f "$tmp" "$out"
  echo "built $out" >&2
}
for c in "$SRC"/*.c; do
  n="$(basename "$c" .c)"
  build "$c" "$OUT/$n.wasm" "$CC" --target=wasm32-wasi --sysroot="$WASI_SYSROOT" -O2 -Wall -Werror "$c"
done
# Multi-memory: the memory-limit attack modules (mem4*.wat) declare several memories.
for w in "$SRC"/*.wat; do
  n="$(basename "$w" .wat)"
  build "$w" "$OUT/$n.wasm" wat2wasm --enable-multi-memory "$w"
done
echo "$OUT"
