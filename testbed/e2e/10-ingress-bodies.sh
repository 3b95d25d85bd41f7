#!/usr/bin/env bash
# 100 MiB upload and download through the ingress with checksums, to a container on each
# host (h2's through the overlay) (issue: ingress, 6).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
start_vxgate 1
start_vxgate 2
make_blob 100
# round robin: two requests in a row go to the two containers (h2c1's through the overlay);
# each direction must have reached both
ups=()
for i in 1 2; do
  got=$(https_get web.example.com / -H 'Expect:' --data-binary "@$BLOB" -D "$LOGDIR/h$i.hdr")
  who=$(grep -i '^x-container:' "$LOGDIR/h$i.hdr" | tr -d '\r' | awk '{print $2}')
  [ "$got" = "$BLOB_SUM" ] || fail "upload to $who: sha256 $got, expected $BLOB_SUM"
  pass "100 MiB upload to $who, sha256 matches"
  ups+=("$who")
done
both=$(printf '%s\n' "${ups[@]}" | sort | tr '\n' ' ')
[ "$both" = "h1c1 h2c1 " ] || fail "uploads answered by: $both (expected h1c1 and h2c1)"
downs=()
want=$(/usr/bin/python3 -c "
import hashlib, sys
sys.path.insert(0, '$TESTBED')
from backend import pattern
print(hashlib.sha256(pattern(100 * 1024 * 1024)).hexdigest())")
for i in 1 2; do
  got=$(https_get web.example.com /bytes/104857600 -D "$LOGDIR/d$i.hdr" | sha256sum | cut -d' ' -f1)
  who=$(grep -i '^x-container:' "$LOGDIR/d$i.hdr" | tr -d '\r' | awk '{print $2}')
  [ "$got" = "$want" ] || fail "download from $who: sha256 $got, expected $want"
  pass "100 MiB download from $who, sha256 matches"
  downs+=("$who")
done
both=$(printf '%s\n' "${downs[@]}" | sort | tr '\n' ' ')
[ "$both" = "h1c1 h2c1 " ] || fail "downloads answered by: $both (expected h1c1 and h2c1)"
pass "uploads and downloads each reached both containers: $both"
