#!/usr/bin/env bash
# The README's demo: the two runs of runwasi's README, for real, under containerd.
# Installs what is missing, builds the shim and the demo image, and starts a private
# containerd under .state/ (the system's containerd is untouched). To use your own
# containerd instead, install the shim on its PATH (scripts/install.sh) and set
# BUNWASI_CONTAINERD_ADDRESS=/run/containerd/containerd.sock.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --demo
shim_dir=$(dirname "$(bash scripts/build-shim.sh "$PWD/build/bin" containerd-shim-wasmtime-v1)")
bun=node_modules/.bin/bun
IMAGE=ghcr.io/containerd/runwasi/wasi-demo-app:latest
RUNTIME=io.containerd.wasmtime.v1
state=${BUNWASI_DEMO_DIR:-$PWD/.state/demo}

if [[ -n ${BUNWASI_CONTAINERD_ADDRESS:-} ]]; then
  ctr() { command ctr --address "$BUNWASI_CONTAINERD_ADDRESS" -n bunwasi-demo "$@"; }
else
  bash scripts/containerd.sh stop "$state" >/dev/null 2>&1 || true
  bash scripts/containerd.sh start "$state" "$shim_dir" >/dev/null
  trap 'bash scripts/containerd.sh stop "$state"' EXIT
  ctr() { bash scripts/containerd.sh ctr "$state" -n bunwasi-demo "$@"; }
fi

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

archive=$(mktemp --suffix=.tar)
"$bun" tools/image/cli.ts --name "$IMAGE" --out "$archive" \
  --file /wasi-demo-app.wasm=build/wasm/wasi-demo-app.wasm --entrypoint /wasi-demo-app.wasm >/dev/null
ctr images import "$archive" >/dev/null
rm -f "$archive"

step "ctr run --rm --runtime=$RUNTIME $IMAGE testwasm /wasi-demo-app.wasm echo 'hello'"
ctr run --rm --runtime="$RUNTIME" "$IMAGE" testwasm /wasi-demo-app.wasm echo 'hello'

step "ctr run --rm --runtime=$RUNTIME $IMAGE testwasm   # the song that never ends"
ctr run --rm --runtime="$RUNTIME" "$IMAGE" testwasm &
runner=$!
sleep 3.5
step "ctr task kill -s SIGKILL testwasm   # from another session"
ctr task kill -s SIGKILL testwasm
wait "$runner" || echo "(ctr run ended with status $?: killed by SIGKILL = 128+9)"
echo
echo "demo done"
