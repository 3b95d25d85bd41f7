#!/usr/bin/env bash
# A WebSocket (HTTP/1.1 Upgrade) through the ingress echoes messages both ways
# (issue: ingress, 6).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
start_vxgate 1
start_vxgate 2
for _ in 1 2; do
  out=$(on cl /usr/bin/python3 "$TESTBED/wsclient.py" web.example.com 10.99.0.1 443 "$STATE/h1/tls/self-signed.crt" 20) \
    || fail "websocket: $out"
done
pass "WebSocket echo through the ingress ($out, twice: both backends)"
