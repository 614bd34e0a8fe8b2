#!/usr/bin/env bash
# A private containerd for demos (the shell twin of test/support/containerd.ts). Never touches
# the system's containerd: own root, state, sockets, config and log, all under DIR.
#
#   scripts/containerd.sh start DIR [EXTRA_PATH]   start in the background; prints the address
#   scripts/containerd.sh stop DIR                 kill it and what it started, unmount, rm DIR
#   scripts/containerd.sh ctr DIR ARGS...          ctr against it (namespace "default" unless -n)
#
# Env: CONTAINERD (default /usr/bin/containerd), CTR (default /usr/bin/ctr).
# Then: ctr --address DIR/c.sock -n demo images import img.tar
set -euo pipefail

CONTAINERD=${CONTAINERD:-/usr/bin/containerd}
CTR=${CTR:-/usr/bin/ctr}

usage() { sed -n '2,12p' "$0" >&2; exit 2; }

[ $# -ge 2 ] || usage
cmd=$1
dir=$(realpath -m "$2")
addr="$dir/c.sock"

write_config() {
  cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.blockfile", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp", "io.containerd.nri.v1.nri"]

[grpc]
  address = "$addr"

[ttrpc]
  address = "$addr.ttrpc"

[debug]
  address = ""
  level = "debug"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
TOML
}

start() {
  local extra=${1:-}
  if [ ${#addr} -gt 100 ]; then echo "socket path too long: $addr (use a shorter DIR)" >&2; exit 1; fi
  if [ -f "$dir/containerd.pid" ] && kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null; then
    echo "unix://$addr"; return
  fi
  mkdir -p "$dir/root" "$dir/state" "$dir/fifo"
  write_config
  PATH="${extra:+$extra:}$PATH" setsid "$CONTAINERD" --config "$dir/config.toml" \
    </dev/null >>"$dir/containerd.log" 2>&1 &
  echo $! >"$dir/containerd.pid"
  for _ in $(seq 1 400); do
    if ! kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null; then
      echo "containerd exited; log tail:" >&2; tail -n 30 "$dir/containerd.log" >&2; exit 1
    fi
    if [ -S "$addr" ] && "$CTR" --address "$addr" version >/dev/null 2>&1; then
      echo "unix://$addr"; return
    fi
    sleep 0.05
  done
  echo "containerd did not answer in 20 s; log tail:" >&2; tail -n 30 "$dir/containerd.log" >&2; exit 1
}

# Processes whose command line mentions DIR or whose cwd is under it (containerd, its shims).
ours() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    # not this script (its own command line names DIR)
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "$(basename "$0") stop" && continue
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "$dir"; then echo "${p#/proc/}"; continue; fi
    case "$(readlink "$p/cwd" 2>/dev/null)" in "$dir"|"$dir"/*) echo "${p#/proc/}";; esac
  done
}

stop() {
  [ -d "$dir" ] || return 0
  if [ -S "$addr" ] && "$CTR" --address "$addr" version >/dev/null 2>&1; then
    for ns in $("$CTR" --address "$addr" namespaces ls -q 2>/dev/null); do
      c() { "$CTR" --address "$addr" -n "$ns" "$@" 2>/dev/null || true; }
      for t in $(c tasks ls -q); do c tasks delete -f "$t" >/dev/null; done
      for k in $(c containers ls -q); do c containers rm "$k" >/dev/null; done
      imgs=$(c images ls -q); [ -z "$imgs" ] || c images rm --sync $imgs >/dev/null
      c namespaces rm "$ns" >/dev/null
      rmdir "/run/containerd/runc/$ns" 2>/dev/null || true
    done
  fi
  if [ -f "$dir/containerd.pid" ]; then
    pid=$(cat "$dir/containerd.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # containers whose shim is gone: runc still knows them (bundles name ns/id)
  for b in "$dir"/state/io.containerd.runtime.v2.task/*/*; do
    [ -d "$b" ] || continue
    id=$(basename "$b"); ns=$(basename "$(dirname "$b")")
    runc --root "/run/containerd/runc/$ns" delete -f "$id" >/dev/null 2>&1 || true
    rmdir "/run/containerd/runc/$ns" 2>/dev/null || true
  done
  for _ in 1 2 3 4 5; do
    pids=$(ours || true); [ -n "$pids" ] || break
    for p in $pids; do # a killed shim leaves /run/containerd/s/<sha256(address/ns/id)>
      a=$(tr '\0' '\n' 2>/dev/null </proc/$p/cmdline | awk '/^-(namespace|address|id)$/ { k=$0; next } k { v[k]=$0; k="" } END { if (v["-id"] != "") printf "%s/%s/%s", v["-address"], v["-namespace"], v["-id"] }')
      [ -z "$a" ] || rm -f "/run/containerd/s/$(printf %s "$a" | sha256sum | cut -d' ' -f1)"
    done
    kill -KILL $pids 2>/dev/null || true; sleep 0.1
  done
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf "$dir"
}

case "$cmd" in
  start) start "${3:-}" ;;
  stop) stop ;;
  ctr) shift 2; exec "$CTR" --address "$addr" "$@" ;;
  *) usage ;;
esac
