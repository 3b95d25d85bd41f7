#!/usr/bin/env bash
# Every overlay end-to-end test (02-07, kernel interop included) and test 19 (1 GiB each way,
# underlay checksum offload off) again with overlay.offload = "off" (issue 7): the portable
# datapath must stay correct. Seven tests in a row: its budget in run.sh is 7 x 280 s.
# e2e-timeout: 1960
set -u
dir=$(cd "$(dirname "$0")" && pwd)
rc=0
for n in 02 03 04 05 06 07 19; do
  t=$(ls "$dir"/$n-*.sh)
  name=$(basename "$t" .sh)
  out=$(mktemp /tmp/vxgate-e2e-off.XXXXXX)
  if VXG_OFFLOAD=off timeout 280 bash "$t" > "$out" 2>&1; then
    echo "ok: offload off: $name ($(grep -c '^ok:' "$out") checks)"
  else
    echo "FAIL: offload off: $name" >&2
    tail -n 40 "$out" >&2
    rc=1
  fi
  rm -f "$out"
done
exit $rc
