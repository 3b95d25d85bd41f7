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

# a WebSocket still open at SIGTERM: the drain gives upgraded connections 5 s, then closes
# them and vxgate exits, however long the client would keep it (it holds for 60 s)
ws_out=$LOGDIR/ws-hold.out
on cl /usr/bin/python3 "$TESTBED/wsclient.py" web.example.com 10.99.0.1 443 "$STATE/h1/tls/self-signed.crt" 2 60 > "$ws_out" 2>&1 &
ws_pid=$!
for _ in $(seq 100); do grep -q holding "$ws_out" && break; sleep 0.1; done
grep -q "2 echoes ok from .*; holding" "$ws_out" || fail "the held WebSocket did not open: $(cat "$ws_out")"
t0=$(date +%s%N)
kill -TERM "$VX_PID_1"
for _ in $(seq 300); do alive "$VX_PID_1" || break; sleep 0.1; done
took=$(( ($(date +%s%N) - t0) / 1000000 ))
! alive "$VX_PID_1" || fail "vxgate on h1 still runs ${took} ms after SIGTERM, held by an open WebSocket"
rc=0; wait "$VX_PID_1" || rc=$?
[ "$rc" = 0 ] || fail "vxgate on h1 exited $rc after the drain"
# the drain waited for the WebSocket (not cut at once), within its 10 s bound
[ "$took" -ge 4000 ] || fail "vxgate exited $took ms after SIGTERM: the open WebSocket was not drained"
! grep -q "parts still busy" "$LOGDIR/vxgate-h1.log" || fail "the drain ran into its 10 s bound"
wait "$ws_pid" || true
grep -q "closed by the server" "$ws_out" || fail "the held WebSocket was not closed at the drain's end: $(cat "$ws_out")"
pass "SIGTERM with a WebSocket open: drained for its 5 s, vxgate exited 0 after $took ms, the client saw the close ($(tail -1 "$ws_out"))"
