#!/usr/bin/env bash
# Regenerates the committed TypeScript from proto/ with ts-proto (through buf, both
# pinned in package.json). Each package gets its own output folder so that
# src/ttrpc stays standalone. `--check` fails if the committed files are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=node_modules/.bin
opts="outputServices=generic-definitions,esModuleInterop=true,importSuffix=.ts,useOptionals=none,outputJsonMethods=false,outputTypeAnnotations=static-only,oneof=unions-value,env=browser,useDate=false,fileSuffix="

gen() { # out-dir, then the proto files (relative to their module root)
  local out=$1; shift
  local tmp; tmp=$(mktemp -d)
  cat > "$tmp/buf.gen.yaml" <<YAML
version: v2
plugins:
  - local: $PWD/$bin/protoc-gen-ts_proto
    out: $tmp/out
    opt: [${opts}]
YAML
  local paths=()
  for p in "$@"; do paths+=(--path "$p"); done
  "$bin/buf" generate --template "$tmp/buf.gen.yaml" "${paths[@]}"
  rm -rf "$out"; mkdir -p "$out"; cp -r "$tmp/out/." "$out/"
  rm -rf "$tmp"
}

check=${1:-}
if [[ $check == --check ]]; then
  before=$(git status --porcelain -- src/ttrpc/gen src/task/gen src/daemon/gen src/containerd/gen test/interop/gen)
fi

gen src/ttrpc/gen proto/ttrpc/request.proto
gen test/interop/gen test/interop/echo.proto
if compgen -G "proto/containerd/**/*.proto" >/dev/null || [[ -d proto/containerd ]]; then
  # containerd's gRPC API (the services a shim calls back) has its own output: src/containerd.
  # The CRI's PodSandboxConfig (proto/k8s) is what containerd's Sandbox API hands a shim.
  mapfile -t task_protos < <(find proto/containerd proto/k8s -name '*.proto' | grep -v -e /services/containers/ -e /services/images/ -e /services/content/ -e /services/leases/ -e /types/descriptor.proto | sort)
  gen src/task/gen "${task_protos[@]}"
fi
gen src/containerd/gen proto/containerd/services/{containers,images,content,leases}/v1/*.proto
# The shared-mode daemon's manager service (our own package).
gen src/daemon/gen proto/bunwasi/manager/v1/manager.proto

if [[ $check == --check ]]; then
  after=$(git status --porcelain -- src/ttrpc/gen src/task/gen src/daemon/gen src/containerd/gen test/interop/gen)
  if [[ -n $after && $after != "$before" ]] || ! git diff --quiet -- src/ttrpc/gen src/task/gen src/daemon/gen src/containerd/gen test/interop/gen; then
    echo "generated code is stale: run scripts/gen-proto.sh and commit" >&2
    git diff --stat -- src/ttrpc/gen src/task/gen src/daemon/gen src/containerd/gen test/interop/gen >&2
    exit 1
  fi
  echo "generated code is up to date"
fi
