#!/usr/bin/env bash
# Build the wasi:http test services into ${1:-<repo>/build/wasm}/http from
# test/wasm/http/handler.c: clang (wasm32, no libc: the canonical ABI is written by hand)
# makes a core module, `wasm-tools component embed` adds the WIT world (test/wasm/http/world.wit
# over wasi:http 0.2.12, whose WIT files come from the wasmtime-wasi-http crate that the
# http host library is built from, so from crates.io), and `wasm-tools component new` makes the
# component, checking every import's signature. Outputs:
#   handler.wasm   the service (routes in handler.c)
#   missing.wasm   the same with an import no host defines (a link error at start)
#   handler.wat    handler.wasm as component text (`wasm-tools print`): a service given as WAT
# With `--wasi 0.2.N` (N < 12) it builds only handler-0.2.N.wasm, for hosts whose WASI is older
# (runwasi's wasmtime 36 has 0.2.6; bench/http/run.ts): the same source and WIT with the package
# versions rewritten and the @since gates lowered. 0.2.x minors only add functions, so the ones the
# handler uses have the same types.
# Idempotent: rebuilt only when an input is newer.
set -euo pipefail
wasi=""
if [[ ${1:-} == --wasi ]]; then wasi="$2"; shift 2; fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$REPO/build/wasm}/http"
SRC="$REPO/test/wasm/http"
WASM_TOOLS="$REPO/build/cargo/bin/wasm-tools"
log() { echo "build-http-components.sh: $*" >&2; }
[[ -x "$WASM_TOOLS" ]] || bash "$REPO/scripts/build-components.sh" >/dev/null
mkdir -p "$OUT"

fresh() { # out inputs...
  local out="$1"; shift
  [[ -f "$out" ]] || return 1
  for i in "$@" "${BASH_SOURCE[0]}"; do [[ "$out" -nt "$i" ]] || return 1; done
}
if [[ -n $wasi ]]; then
  [[ $wasi =~ ^0\.2\.[0-9]+$ ]] || { log "--wasi wants 0.2.N, got $wasi"; exit 2; }
  fresh "$OUT/handler-$wasi.wasm" "$SRC/handler.c" "$SRC/world.wit" "$WASM_TOOLS" && { echo "$OUT"; exit 0; }
elif fresh "$OUT/handler.wasm" "$SRC/handler.c" "$SRC/world.wit" "$WASM_TOOLS" && fresh "$OUT/missing.wasm" "$SRC/handler.c" "$SRC/world.wit" &&
  fresh "$OUT/handler.wat" "$OUT/handler.wasm"; then
  echo "$OUT"
  exit 0
fi

# The WIT of wasi:http (and the interfaces it uses) as the crate ships it.
manifest="$(cargo metadata --quiet --locked --format-version 1 --manifest-path "$REPO/native/http-host/Cargo.toml" |
  "$REPO/node_modules/.bin/bun" -e 'const m = JSON.parse(await Bun.stdin.text()); console.log(m.packages.find((p) => p.name === "wasmtime-wasi-http").manifest_path)')"
deps="$(dirname "$manifest")/wit/deps"
[[ -f "$deps/http.wit" ]] || { log "no WIT files in $deps"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wit"
cp "$SRC/world.wit" "$work/wit/"
cp -r "$deps" "$work/wit/deps"
build() { # name world cflags...
  local name="$1" world="$2"; shift 2
  clang --target=wasm32 -nostdlib -O2 -Wall -Werror -Wl,--no-entry "$@" -o "$work/$name.core.wasm" "$SRC/handler.c"
  "$WASM_TOOLS" component embed "$work/wit" --world "$world" "$work/$name.core.wasm" -o "$work/$name.embed.wasm"
  "$WASM_TOOLS" component new "$work/$name.embed.wasm" -o "$work/$name.wasm"
  mv -f "$work/$name.wasm" "$OUT/$name.wasm"
  log "built $OUT/$name.wasm"
}
if [[ -n $wasi ]]; then
  sed -i -E -e "s/@0\.2\.12/@$wasi/g" -e 's/@since\(version = 0\.2\.[0-9]+\)/@since(version = 0.2.0)/g' "$work"/wit/*.wit "$work"/wit/deps/*.wit
  build "handler-$wasi" handler "-DWASI_V=\"$wasi\""
  echo "$OUT"
  exit 0
fi
build handler handler
build missing handler-missing -DMISSING_IMPORT
"$WASM_TOOLS" print "$OUT/handler.wasm" -o "$work/handler.wat"
mv -f "$work/handler.wat" "$OUT/handler.wat"
log "built $OUT/handler.wat"
echo "$OUT"
