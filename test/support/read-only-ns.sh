#!/usr/bin/env bash
# Runs a command with every filesystem read-only except one directory (and /proc, /sys), to
# show that the command writes nothing else (test/e2e/install.test.ts). Run it in a mount
# namespace of its own, as root:
#
#   unshare --mount bash test/support/read-only-ns.sh WRITABLE_DIR COMMAND ARGS...
#
# Bind remounts change only this namespace's view; the rest of the machine sees no change.
# Before running the command it checks that every mount it reaches is read-only.
set -euo pipefail
W=$1; shift
mount --make-rprivate /
mount --bind "$W" "$W"
declare -A top=()
while read -r _ _ _ _ mp opts _; do top[$(printf '%b' "$mp")]=$opts; done < /proc/self/mountinfo
for mp in "${!top[@]}"; do
  case $mp in "$W" | /proc | /proc/* | /sys | /sys/*) continue ;; esac
  mount -o remount,bind,ro "$mp"
done
# The last line of a mount point is the mount on top, the one paths reach.
top=()
while read -r _ _ _ _ mp opts _; do top[$(printf '%b' "$mp")]=$opts; done < /proc/self/mountinfo
for mp in "${!top[@]}"; do
  case $mp in "$W" | /proc | /proc/* | /sys | /sys/*) continue ;; esac
  [[ ,${top[$mp]}, == *,ro,* ]] || { echo "read-only-ns.sh: $mp is still writable" >&2; exit 90; }
done
[[ -w $W && ! -w / && ! -w /etc && ! -w /usr/local && ! -w /var/lib/dpkg && ! -w $(dirname "$W") ]] || {
  echo "read-only-ns.sh: the sandbox leaks" >&2
  exit 91
}
exec "$@"
