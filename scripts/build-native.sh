#!/usr/bin/env bash
# Builds the executor's native helpers with the clang setup installs, idempotently, into
# ${1:-<repo>/build/native}; prints the path of each library.
#   libbunwasi-kill.so  C signal handlers for an executor running its module on its only
#                       JS thread (src/engines/native/kill-signals.c, src/engines/kill-signals.ts)
#   libbunwasi-pool.so  the host functions and epoch callback of the daemon's run pools, which
#                       run on wasmtime's fibers where no JavaScript may (src/engines/native/pool-host.c)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-$PWD/build/native}"
mkdir -p "$out"
for name in kill:kill-signals pool:pool-host; do
  src="src/engines/native/${name#*:}.c"
  lib="$out/libbunwasi-${name%%:*}.so"
  if [[ ! -f $lib || $src -nt $lib || scripts/build-native.sh -nt $lib ]]; then
    # Built beside, then renamed: a running executor directory may hard-link the old file.
    clang -O2 -fPIC -shared -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -o "$lib.tmp.$$" "$src"
    mv -f "$lib.tmp.$$" "$lib"
  fi
  echo "$lib"
done
