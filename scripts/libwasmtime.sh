#!/usr/bin/env bash
# Obtain libwasmtime (the wasmtime C API shared library) idempotently.
#
# Source: the PyPI `wasmtime` wheel (wasmtime-py), which ships the upstream
# C API build as wasmtime/linux-x86_64/_libwasmtime.so. The wheel version and
# its sha256 are pinned below; the wasmtime-py major version equals the
# wasmtime release whose C API it carries (checked: the .so reports 48.0.0).
#
# Result: ${BUNWASI_LIB_DIR:-<repo>/build/lib}/libwasmtime.so plus
#         libwasmtime.version beside it. The resulting path is printed on stdout.
#
# Override: BUNWASI_LIBWASMTIME=/path/to/libwasmtime.so (e.g. an operator's
# own upstream C API release) skips the download; that path is printed.
set -euo pipefail

WASMTIME_VERSION="48.0.0"
WHEEL="wasmtime-${WASMTIME_VERSION}-py3-none-manylinux1_x86_64.whl"
WHEEL_SHA256="58544d539053dff7bd4cf30c40d7a540862d683013c0dfa6ba46a063f5b682f7"
MEMBER="wasmtime/linux-x86_64/_libwasmtime.so"

log() { echo "libwasmtime.sh: $*" >&2; }

if [[ -n "${BUNWASI_LIBWASMTIME:-}" ]]; then
  if [[ ! -f "$BUNWASI_LIBWASMTIME" ]]; then
    log "BUNWASI_LIBWASMTIME=$BUNWASI_LIBWASMTIME does not exist"
    exit 1
  fi
  log "using operator-provided $BUNWASI_LIBWASMTIME (no download)"
  echo "$BUNWASI_LIBWASMTIME"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) log "only linux x86_64 is pinned here; set BUNWASI_LIBWASMTIME"; exit 1 ;;
esac

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIB_DIR="${BUNWASI_LIB_DIR:-$REPO/build/lib}"
OUT="$LIB_DIR/libwasmtime.so"
VERSION_FILE="$LIB_DIR/libwasmtime.version"

if [[ -f "$OUT" && -f "$VERSION_FILE" && "$(cat "$VERSION_FILE")" == "$WASMTIME_VERSION" ]]; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$LIB_DIR"
CACHE_DIR="${BUNWASI_DOWNLOAD_DIR:-$REPO/build/download}"
mkdir -p "$CACHE_DIR"
WHL_PATH="$CACHE_DIR/$WHEEL"

sha_ok() { [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$WHEEL_SHA256" ]]; }

if ! sha_ok "$WHL_PATH"; then
  rm -f "$WHL_PATH"
  PIP=""
  for c in pip3 pip "python3 -m pip"; do
    if $c --version >/dev/null 2>&1; then PIP="$c"; break; fi
  done
  if [[ -z "$PIP" ]]; then log "pip not found (needed to fetch the wasmtime wheel)"; exit 1; fi
  log "downloading $WHEEL"
  $PIP download --quiet --no-deps --only-binary=:all: \
    --platform manylinux1_x86_64 --python-version 3.11 \
    "wasmtime==${WASMTIME_VERSION}" -d "$CACHE_DIR" >&2
fi
if ! sha_ok "$WHL_PATH"; then
  log "sha256 mismatch for $WHL_PATH (want $WHEEL_SHA256, got $(sha256sum "$WHL_PATH" 2>/dev/null | cut -d' ' -f1))"
  exit 1
fi

TMP="$(mktemp -d "$LIB_DIR/.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
python3 - "$WHL_PATH" "$MEMBER" "$TMP/libwasmtime.so" <<'PY' || unzip -p "$WHL_PATH" "$MEMBER" > "$TMP/libwasmtime.so"
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$TMP/libwasmtime.so"
echo "$WASMTIME_VERSION" > "$TMP/libwasmtime.version"
mv -f "$TMP/libwasmtime.so" "$OUT"        # rename: atomic for concurrent readers
mv -f "$TMP/libwasmtime.version" "$VERSION_FILE"
log "installed libwasmtime $WASMTIME_VERSION"
echo "$OUT"
