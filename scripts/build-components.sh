#!/usr/bin/env bash
# Build the test components into ${1:-<repo>/build/wasm}/components, idempotently:
#   - each C test program in COMMANDS (built as a core module by build-wasm.sh) becomes a
#     command component with `wasm-tools component new` and wasmtime's WASI preview 1
#     command adapter;
#   - each test/wasm/components/*.wat (component text) becomes a binary (`wasm-tools parse`).
# Tools come from crates.io only, into build-local directories:
#   - wasm-tools (pinned; the wasm-encoder line of libwasmtime 48) is compiled once with
#     `cargo install` into build/cargo (~2 minutes on 2 cores with the features we use);
#   - the adapter ships inside the crate wasi-preview1-component-adapter-provider, whose
#     major version must match libwasmtime's (48): `cargo vendor` of a one-line manifest
#     unpacks it (checksum-verified by cargo) under build/adapter.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WASM_DIR="${1:-$REPO/build/wasm}"
OUT="$WASM_DIR/components"
WASM_TOOLS_VERSION="1.254.0"
ADAPTER_VERSION="48.0.0"
COMMANDS=(wasi-demo-app env cat escape)
CARGO_ROOT="$REPO/build/cargo"
ADAPTER_DIR="$REPO/build/adapter"
log() { echo "build-components.sh: $*" >&2; }
command -v cargo >/dev/null || { log "cargo not found"; exit 1; }

# 1. wasm-tools
WASM_TOOLS="$CARGO_ROOT/bin/wasm-tools"
if [[ "$("$WASM_TOOLS" --version 2>/dev/null)" != "wasm-tools $WASM_TOOLS_VERSION" ]]; then
  log "compiling wasm-tools $WASM_TOOLS_VERSION (a few minutes, once)"
  start=$SECONDS
  nice -n 10 cargo install --quiet wasm-tools --version "$WASM_TOOLS_VERSION" --locked \
    --no-default-features --features component,parse,print,validate --root "$CARGO_ROOT" >&2
  log "wasm-tools compiled in $((SECONDS - start)) s"
fi

# 2. the preview 1 command adapter
ADAPTER="$ADAPTER_DIR/vendor/wasi-preview1-component-adapter-provider/artefacts/wasi_snapshot_preview1.command.wasm"
if [[ ! -f "$ADAPTER" || "$(cat "$ADAPTER_DIR/version" 2>/dev/null)" != "$ADAPTER_VERSION" ]]; then
  log "fetching wasi-preview1-component-adapter-provider $ADAPTER_VERSION"
  rm -rf "$ADAPTER_DIR"
  mkdir -p "$ADAPTER_DIR/src"
  cat > "$ADAPTER_DIR/Cargo.toml" <<TOML
[package]
name = "bunwasi-adapter-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"

[workspace]
TOML
  : > "$ADAPTER_DIR/src/lib.rs"
  cargo vendor --quiet --manifest-path "$ADAPTER_DIR/Cargo.toml" "$ADAPTER_DIR/vendor" >/dev/null
  [[ -f "$ADAPTER" ]] || { log "adapter not found in the vendored crate: $ADAPTER"; exit 1; }
  echo "$ADAPTER_VERSION" > "$ADAPTER_DIR/version"
fi

# 3. components
bash "$REPO/scripts/build-wasm.sh" "$WASM_DIR" >/dev/null
mkdir -p "$OUT"
fresh() { # out inputs...: is out newer than every input (and this script)?
  local out="$1"; shift
  [[ -f "$out" ]] || return 1
  for i in "$@" "${BASH_SOURCE[0]}"; do [[ "$out" -nt "$i" ]] || return 1; done
}
for n in "${COMMANDS[@]}"; do
  core="$WASM_DIR/$n.wasm" out="$OUT/$n.wasm"
  fresh "$out" "$core" "$ADAPTER" "$WASM_TOOLS" && continue
  "$WASM_TOOLS" component new "$core" --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$out.tmp.$$"
  mv -f "$out.tmp.$$" "$out"
  log "built $out"
done
for w in "$REPO"/test/wasm/components/*.wat; do
  out="$OUT/$(basename "$w" .wat).wasm"
  fresh "$out" "$w" "$WASM_TOOLS" && continue
  "$WASM_TOOLS" parse "$w" -o "$out.tmp.$$"
  mv -f "$out.tmp.$$" "$out"
  log "built $out"
done
echo "$OUT"
