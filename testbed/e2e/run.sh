#!/usr/bin/env bash
# Runs every end-to-end test (e2e/NN-*.sh, or those named) one after the other and prints
# "e2e: N passed, N failed". They need root and network namespaces: when those are missing
# they are skipped, except under CI=true, where that is a failure.
set -uo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
cant=""
[ "$(id -u)" = 0 ] || cant="not root"
command -v ip >/dev/null || cant="iproute2 missing"
if [ -z "$cant" ] && ! ip netns add vxgate-probe-$$ 2>/dev/null; then cant="cannot create network namespaces"; fi
[ -z "$cant" ] && ip netns del vxgate-probe-$$
if [ -n "$cant" ]; then
  if [ "${CI:-}" = true ]; then echo "e2e: cannot run ($cant)"; echo "e2e: 0 passed, 1 failed"; exit 1; fi
  echo "e2e: skipped ($cant)"; exit 0
fi
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=("$dir"/[0-9]*.sh)
passed=0 failed=0 failures=()
for t in "${tests[@]}"; do
  name=$(basename "$t" .sh)
  start=$(date +%s)
  # a test may ask for more than 300 s with a line "# e2e-timeout: SECONDS"; it runs in its own
  # process group, and at the deadline the whole group gets SIGTERM (each test's trap then
  # tears its testbed down), then SIGKILL, so nothing it started outlives it
  budget=$(sed -n 's/^# e2e-timeout: \([0-9][0-9]*\).*/\1/p' "$t" | head -1)
  setsid bash "$t" > "/tmp/vxgate-e2e-$name.out" 2>&1 &
  pid=$!
  ( end=$((SECONDS + ${budget:-300}))
    while kill -0 "$pid" 2>/dev/null; do
      if (( SECONDS >= end )); then
        echo "e2e $name: over its ${budget:-300} s" >> "/tmp/vxgate-e2e-$name.out"
        kill -TERM -- "-$pid" 2>/dev/null
        for _ in $(seq 75); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null
        break
      fi
      sleep 0.2
    done ) &
  watchdog=$!
  rc=0
  wait "$pid" || rc=$?
  wait "$watchdog" 2>/dev/null
  if [ "$rc" = 0 ]; then
    passed=$((passed + 1)); echo "e2e $name ... ok ($(( $(date +%s) - start ))s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "e2e $name ... FAILED ($(( $(date +%s) - start ))s)"
    sed 's/^/    /' "/tmp/vxgate-e2e-$name.out" | tail -n 60
  fi
  grep '^ok:\|^RESULT' "/tmp/vxgate-e2e-$name.out" | sed 's/^/    /'
done
[ ${#failures[@]} -eq 0 ] || echo "e2e failures: ${failures[*]}"
echo "e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
