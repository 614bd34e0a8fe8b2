#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs every check and test suite. Ends with one line
# `N passed, M failed` counting every test plus each static check (format/lint, types,
# generated code). Exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
export PATH="$PWD/node_modules/.bin:$PATH:/usr/local/go/bin"

passed=0
failed=0
check() { # name, command...
  local name=$1; shift
  echo "== $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}

check "format and lint (biome)" biome check src test bench scripts tools examples
check "types (tsc)" tsc -p .
check "generated code is current" bash scripts/gen-proto.sh --check
check "no async file I/O in the shim server or the executor (thread-pool rule)" bun scripts/check-thread-pool.ts

# bun test prints its own totals; fold them into ours. Suites run in one process per
# folder so a crash in one cannot hide the others' results.
suites=("$@")
((${#suites[@]})) || suites=(test/unit test/package test/interop test/e2e)
for suite in "${suites[@]}"; do
  [[ -d $suite ]] || continue
  find "$suite" -name '*.test.ts' | grep -q . || continue
  echo "== bun test $suite"
  out=$(mktemp)
  bun test --timeout 120000 "$suite" 2>&1 | tee "$out"
  status=${PIPESTATUS[0]}
  p=$(grep -E '^ *[0-9]+ pass$' "$out" | tail -1 | tr -dc 0-9)
  f=$(grep -E '^ *[0-9]+ fail$' "$out" | tail -1 | tr -dc 0-9)
  p=${p:-0}
  f=${f:-0}
  # A runner that died without totals, or reported none run, counts as a failure.
  if [[ $status -ne 0 && $f -eq 0 ]] || [[ $p -eq 0 && $f -eq 0 ]]; then f=$((f + 1)); fi
  passed=$((passed + p))
  failed=$((failed + f))
  rm -f "$out"
done

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
