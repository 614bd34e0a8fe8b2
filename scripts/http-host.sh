#!/usr/bin/env bash
# Build bunwasi's wasi:http host library (native/http-host: the wasmtime, wasmtime-wasi and
# wasmtime-wasi-http crates at the libwasmtime version we pin, from crates.io, locked by its
# Cargo.lock) into ${1:-<repo>/build/http-host}:
#   libbunwasi_http.so       the library the executor loads for wasi:http services
#   libbunwasi_http.version  its identity (crate, wasmtime, digest of the .so): part of the
#                            compile-cache key, so an artifact it wrote is read only by it
# Idempotent: skipped when the library is there and its inputs (sources, lock file, this
# script, the Rust toolchain) are unchanged. Cold: several minutes on 2 cores (see
# docs/ARCHITECTURE.md, "wasi:http services"); prints the library's path.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/native/http-host"
OUT="${1:-$REPO/build/http-host}"
LIB="$OUT/libbunwasi_http.so"
# Cargo's build directory lives outside the checkout, like Go's build cache: a new clone (CI)
# on a machine that built it before reuses the compiled crates; cargo's fingerprints decide.
TARGET="${BUNWASI_CARGO_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/bunwasi/http-host-target}"
log() { echo "http-host.sh: $*" >&2; }
command -v cargo >/dev/null || { log "cargo not found (rustup, Rust >= 1.95)"; exit 1; }

inputs() {
  (cd "$SRC" && sha256sum Cargo.toml Cargo.lock src/*.rs) | sha256sum | cut -d' ' -f1
  sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
  rustc --version
}
stamp="$(inputs | sha256sum | cut -d' ' -f1)"
if [[ -f "$LIB" && "$(cat "$OUT/inputs.sha256" 2>/dev/null)" == "$stamp" ]]; then
  echo "$LIB"
  exit 0
fi

mkdir -p "$OUT" "$TARGET"
log "compiling the wasi:http host library (several minutes when cold)"
start=$SECONDS
tmp="$(mktemp "$OUT/.lib.XXXXXX")"
# The target dir is shared by every checkout, and so is the library's file name in it
# (release/libbunwasi_http.so: a cdylib's name carries no hash), while cargo keeps a fingerprint
# per checkout: one checkout's build could be taken as fresh by another and its library copied.
# So our crate is always rebuilt from this checkout's sources (about a minute; the dependencies
# stay compiled), and the clean, the build and the copy hold the target dir's lock together.
(
  flock 9
  cargo clean --quiet --release -p bunwasi-http-host --manifest-path "$SRC/Cargo.toml" --target-dir "$TARGET" >&2
  nice -n 10 cargo build --quiet --release --locked --manifest-path "$SRC/Cargo.toml" --target-dir "$TARGET" >&2
  cp "$TARGET/release/libbunwasi_http.so" "$tmp"
) 9>"$TARGET/.bunwasi.lock"
log "compiled in $((SECONDS - start)) s"
chmod 0755 "$tmp"
digest="$(sha256sum "$tmp" | cut -c1-16)"
crate="$(sed -n 's/^version = "\(.*\)"/\1/p' "$SRC/Cargo.toml" | head -1)"
echo "bunwasi-http-host-$crate+wasmtime-48.0.0+$digest" > "$OUT/libbunwasi_http.version"
mv -f "$tmp" "$LIB" # rename: a running executor keeps the file it mapped
echo "$stamp" > "$OUT/inputs.sha256"
echo "$LIB"
