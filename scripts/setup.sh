#!/usr/bin/env bash
# Installs everything bunwasi needs to build, test and demo, idempotently, on Debian 12
# as root: Debian packages, the npm toolchain (Bun, buf, ts-proto, biome), libwasmtime,
# the test wasm modules and the Go ttrpc peer. Run it as often as you like.
#
# `setup.sh --demo` stops after what the demo needs (no Go peer, no extra containerd
# builds), so a fresh machine reaches the demo's hello quickly; the test command runs
# the whole setup.
set -euo pipefail
cd "$(dirname "$0")/.."
demo_only=false
[[ ${1:-} == --demo ]] && demo_only=true

log() { echo "setup: $*" >&2; }

# Debian packages: containerd 1.6 and runc (the runtime under test), the wasm toolchain
# for test modules, busybox for native containers, the CNI plugins (/usr/lib/cni) that give
# shared mode's wasi:http test pods a network namespace of their own.
APT_PACKAGES=(containerd runc clang lld wasi-libc libclang-rt-14-dev-wasm32 wabt busybox-static iproute2 containernetworking-plugins)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distribution's containerd service must not be what tests or the demo talk to; we
# start private ones. Leave an operator's running containerd alone.

# npm toolchain, pinned by package-lock.json.
if [[ ! -x node_modules/.bin/bun || package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi

# Go: the machine has it at /usr/local/go; make sure scripts find it.
export PATH="$PATH:/usr/local/go/bin"

bash scripts/libwasmtime.sh >/dev/null
# The executor's C signal handlers (clang, from the packages above): build/native.
bash scripts/build-native.sh >/dev/null
bash scripts/build-wasm.sh >/dev/null
if $demo_only; then
  log "ready for the demo"
  exit 0
fi
# Test components: wasm-tools (compiled once from crates.io into build/cargo, ~2 minutes)
# and wasmtime's preview 1 adapter turn the C test programs into components.
bash scripts/build-components.sh >/dev/null
# wasi:http services: bunwasi's host library, compiled once from crates.io into build/http-host
# (minutes when cold), and the test services (C, through wasm-tools) into build/wasm/http.
bash scripts/http-host.sh >/dev/null
bash scripts/build-http-components.sh >/dev/null
bash test/interop/go/build.sh >/dev/null
# Prometheus' own text parser, for the daemon's metrics test (test/e2e/shared-metrics.test.ts).
bash tools/promparse/build.sh >/dev/null
# containerd 1.7 and 2.x (and their ctr) for test/e2e/matrix.test.ts, built from the Go
# module proxy into build/containerd/<version>/bin; a few minutes the first time only.
bash scripts/containerd-versions.sh >/dev/null
# crictl for test/e2e/cri.test.ts (containerd's CRI plugin), and critest (with the ginkgo CLI
# its --parallel runs) for test/e2e/critest.test.ts, from the module proxy too. critest's pods
# use the CNI plugins (containernetworking-plugins above; its portmap needs iptables, a
# dependency of that package).
bash scripts/cri-tools.sh >/dev/null
# A real kubelet (v1.34) for test/e2e/kubelet*.test.ts, from the module proxy too.
bash scripts/kubelet.sh >/dev/null
# An OpenTelemetry Collector for test/e2e/traces.test.ts, from the module proxy too.
bash scripts/otel-collector.sh >/dev/null
log "ready"
