#!/usr/bin/env bash
# A WebSocket (HTTP/1.1 Upgrade) through the ingress echoes messages both ways
# (issue: ingress, 6).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
start_vxgate 1
start_vxgate 2
# round robin: two WebSockets in a row go to the two containers, h2c1's through the overlay
seen=()
for _ in 1 2; do
  out=$(on cl /usr/bin/python3 "$TESTBED/wsclient.py" web.example.com 10.99.0.1 443 "$STATE/h1/tls/self-signed.crt" 20) \
    || fail "websocket: $out"
  case $out in
    "20 echoes ok from "*) seen+=("${out##* }") ;;
    *) fail "websocket: unexpected output: $out" ;;
  esac
done
both=$(printf '%s\n' "${seen[@]}" | sort | tr '\n' ' ')
[ "$both" = "h1c1 h2c1 " ] || fail "the two WebSockets were answered by: $both (expected h1c1 and h2c1)"
pass "WebSocket echo through the ingress: 20 echoes each from $both"
