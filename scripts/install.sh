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
# The executor's C signal handlers (without them the executor runs modules on a Worker).
install -D -m 0755 "$(bash scripts/build-native.sh)" "$PREFIX/lib/libbunwasi-kill.so"
# The wasi:http host library (wasi:http services), found the same way in ../lib.
http=$(bash scripts/http-host.sh)
install -D -m 0644 "$http" "$PREFIX/lib/libbunwasi_http.so"
install -D -m 0644 "$(dirname "$http")/libbunwasi_http.version" "$PREFIX/lib/libbunwasi_http.version"
echo "installed $PREFIX/bin/containerd-shim-wasmtime-v1"
echo "use it with: ctr run --runtime io.containerd.wasmtime.v1 IMAGE ID"

# Shared mode: the daemon and its thin shim, and a systemd unit for the daemon (started
# before containerd). Not enabled here: `systemctl enable --now containerd-wasmtimed`.
for name in containerd-wasmtimed containerd-shim-wasmtimed-v1; do
  built=$(bash scripts/build-shim.sh "$PWD/build/bin" "$name")
  install -D -m 0755 "$built" "$PREFIX/bin/$name"
done
unit_dir=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
mkdir -p "$unit_dir"
sed "s|@PREFIX@|$PREFIX|g" scripts/systemd/containerd-wasmtimed.service > "$unit_dir/containerd-wasmtimed.service"
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then systemctl daemon-reload || true; fi
echo "installed $PREFIX/bin/containerd-wasmtimed, $PREFIX/bin/containerd-shim-wasmtimed-v1 and $unit_dir/containerd-wasmtimed.service"
echo "shared mode: systemctl enable --now containerd-wasmtimed; then ctr run --runtime io.containerd.wasmtimed.v1 IMAGE ID"
