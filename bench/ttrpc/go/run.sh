#!/usr/bin/env bash
# Go ttrpc load generator over the Echo service (see test/interop/go).
#
#   bench/ttrpc/go/run.sh                      # Go client -> Go server (baseline)
#   bench/ttrpc/go/run.sh --socket PATH        # Go client -> a server already listening at PATH
#
# Env: DURATION (default 5s), WARMUP (1s), SIZE (1024), MATRIX ("1x1 1x64 8x64", CONNSxINFLIGHT).
# Prints one JSON line per matrix entry (fields: conns inflight size calls errors
# seconds calls_per_sec p50_us p99_us).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
socket=""
if [[ "${1:-}" == "--socket" ]]; then
  socket="${2:?--socket needs a path}"
fi

"$root/test/interop/go/build.sh" "$root/build" >&2
peer="$root/build/ttrpc-peer"

server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ -n "${tmpdir:-}" ]]; then rm -rf "$tmpdir"; fi
}
trap cleanup EXIT

if [[ -z "$socket" ]]; then
  tmpdir="$(mktemp -d)"
  socket="$tmpdir/echo.sock"
  coproc SERVER { exec "$peer" server -socket "$socket"; }
  server_pid=$SERVER_PID
  read -r line <&"${SERVER[0]}"
  [[ "$line" == READY ]] || { echo "server did not start: $line" >&2; exit 1; }
fi

for m in ${MATRIX:-1x1 1x64 8x64}; do
  "$peer" bench-client -socket "$socket" -conns "${m%x*}" -inflight "${m#*x}" \
    -duration "${DURATION:-5s}" -warmup "${WARMUP:-1s}" -size "${SIZE:-1024}"
done
