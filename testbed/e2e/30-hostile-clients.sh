#!/usr/bin/env bash
# Hardening round two (issue 30) against real peers in namespaces: a zero-window HTTP/2
# client (python3-h2) gets one of three slots and is closed by send_timeout while another
# client is served; an HTTP/1.1 client that does not read is cut off likewise; the token-less
# admin refuses cross-site writes and DNS rebinding, and API containers on loopback; dig
# from outside recursion_from gets at most 10x its query (the rest TC), while a container
# inside recursion_from gets the whole SRV answer.
. "$(dirname "$0")/lib.sh"
up --hosts 1 --containers 3   # h1c1, h1c3: web; h1c2: api
cfg=$STATE/h1-hostile.toml
# web gets vxgate.max_in_flight = 3 (a client's share: 1); send_timeout 2 s; health checks
# rare (the long-named containers below have no server); 40 containers of a service "amp"
# with long names for large SRV answers
awk '
  /^name = "h1c1"/ { c = 1 } /^name = "h1c[2-9]"/ { c = 0 }
  /^labels = / && c == 1 { print "labels = { app = \"web\", \"vxgate.max_in_flight\" = \"3\" }"; next }
  { print }
  /^http_redirect/ { print "send_timeout_ms = 2000"; print "[ingress.health]"; print "interval_ms = 600000" }' \
  "$STATE/h1.toml" > "$cfg"
for i in $(seq 40); do
  printf '\n[[containers]]\nname = "w%02d-%s"\nip = "10.200.1.%d"\nport = 80\nlabels = { app = "amp" }\n' \
    "$i" "$(printf 'x%.0s' $(seq 50))" $((100 + i)) >> "$cfg"
done
grep -q 'max_in_flight' "$cfg" && grep -q 'send_timeout_ms' "$cfg" || fail "config not rewritten"
start_vxgate 1 "$cfg"
CA=$STATE/h1/tls/self-signed.crt
metric() { on h1 curl -sS http://127.0.0.1:9180/metrics | awk -v k="$1" '$1 == k { print $2 }'; }
# a plain HTTPS GET of web from namespace NS: the status
get_from() {
  on "$1" curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$CA" \
    --resolve web.example.com:443:10.99.0.1 https://web.example.com/
}

# 1. zero-window h2: three streams of 50 MB from the client namespace
on cl /usr/bin/python3 - "$CA" > "$LOGDIR/h2.out" 2>&1 <<'PY' &
import socket, ssl, sys, time
import h2.config, h2.connection, h2.events, h2.settings
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.set_alpn_protocols(["h2"])
s = ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=30), server_hostname="web.example.com")
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
c.initiate_connection()
c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
for sid in (1, 3, 5):
    c.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":authority", "web.example.com"),
                         (":path", "/bytes/50000000")], end_stream=True)
s.sendall(c.data_to_send())
statuses, t0, opened = [], None, time.monotonic()
while True:
    try:
        data = s.recv(65536)
    except (socket.timeout, ConnectionError, ssl.SSLError):
        data = b""
    if not data:
        print("statuses", sorted(statuses)); print("closed_after %.2f" % (time.monotonic() - opened)); break
    for e in c.receive_data(data):   # PINGs are answered (data_to_send below)
        if isinstance(e, h2.events.ResponseReceived):
            statuses.append(int(dict(e.headers)[b":status"]))
            if len(statuses) == 3:
                print("statuses", sorted(statuses), flush=True)
        if isinstance(e, h2.events.ConnectionTerminated):
            print("goaway", flush=True)
    s.sendall(c.data_to_send())
PY
H2_PID=$!
for _ in $(seq 100); do grep -q statuses "$LOGDIR/h2.out" && break; sleep 0.05; done
grep -q "statuses \[200, 503, 503\]" "$LOGDIR/h2.out" || fail "zero-window h2: $(cat "$LOGDIR/h2.out")"
code=$(get_from h1c2)
[ "$code" = 200 ] || fail "another client (h1c2) got $code while the zero-window streams wait"
wait "$H2_PID" || true
grep -q closed_after "$LOGDIR/h2.out" || fail "the zero-window connection was not closed: $(cat "$LOGDIR/h2.out")"
after=$(awk '/closed_after/ { print $2 }' "$LOGDIR/h2.out")
pass "zero-window h2: 1 of 3 slots (200, 503, 503); h1c2 served meanwhile; closed after ${after} s (send_timeout 2 s)"

# 2. HTTP/1.1 that never reads: holds its one slot, then is cut off
on cl /usr/bin/python3 - "$CA" > "$LOGDIR/h1.out" 2>&1 <<'PY' &
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=60), server_hostname="web.example.com")
s.sendall(b"GET /bytes/100000000 HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
head = s.recv(64)
print("status", head.split()[1].decode(), flush=True)
t0 = time.monotonic()
time.sleep(6)          # not reading: the buffers fill, then vxgate's send timeout fires
got = 0
try:
    while chunk := s.recv(1 << 20):
        got += len(chunk)
except (socket.timeout, ConnectionError, ssl.SSLError):
    pass
print("eof_after_bytes", got, "of", 100000000, flush=True)
PY
H1_PID=$!
for _ in $(seq 100); do grep -q status "$LOGDIR/h1.out" && break; sleep 0.05; done
grep -q "status 200" "$LOGDIR/h1.out" || fail "non-reading client: $(cat "$LOGDIR/h1.out")"
code=$(get_from cl)
[ "$code" = 503 ] || fail "a second request of the client holding its share got $code"
code=$(get_from h1c2)
[ "$code" = 200 ] || fail "another client got $code"
before=$(metric vxgate_http_send_timeouts_total)
wait "$H1_PID" || true
got=$(awk '/eof_after_bytes/ { print $2 }' "$LOGDIR/h1.out")
[ -n "$got" ] && [ "$got" -lt 100000000 ] || fail "the non-reading client got everything or nothing: $(cat "$LOGDIR/h1.out")"
timeouts=$(metric vxgate_http_send_timeouts_total)
[ -n "$timeouts" ] && [ "$timeouts" -ge 2 ] || fail "vxgate_http_send_timeouts_total '$timeouts' (before the wait: '$before')"
code=$(get_from cl)
[ "$code" = 200 ] || fail "the client's slot did not come back: $code"
pass "non-reading HTTP/1.1: its second request 503, h1c2 200; cut off after $got of 100000000 bytes; send timeouts counted $timeouts; served again after"

# 3. the token-less admin against what a browser page could send
adm() { on h1 curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$@" http://127.0.0.1:9180/v1/containers; }
body='{"name":"api-9","ip":"10.200.1.199","port":80,"labels":{"app":"api"}}'
[ "$(adm -X POST -H 'Content-Type: text/plain' -d "$body")" = 415 ] || fail "text/plain POST accepted"
[ "$(adm -X POST -H 'Content-Type: application/json' -H 'Origin: http://evil.example' -d "$body")" = 403 ] || fail "foreign Origin accepted"
[ "$(adm -H 'Host: rebind.evil.example')" = 403 ] || fail "a DNS name as Host accepted (rebinding)"
ssrf='{"name":"ssrf","ip":"127.0.0.1","port":9180,"labels":{"app":"ssrf"}}'
[ "$(adm -X POST -H 'Content-Type: application/json' -d "$ssrf")" = 400 ] || fail "a loopback container accepted"
[ "$(adm -X POST -H 'Content-Type: application/json' -d "$body")" = 201 ] || fail "control: a same-origin JSON POST refused"
pass "admin: text/plain 415, foreign Origin 403, rebinding Host 403, loopback container 400; same-origin JSON 201"

# 4. DNS amplification: from outside recursion_from (h1's underlay address) at most 10x the
# query
out=$(on h1 dig -b 10.99.0.1 @10.200.1.1 +qr +bufsize=4096 +nocookie +ignore +tries=1 +time=3 SRV _http._tcp.amp.example.com)
qsize=$(echo "$out" | awk '/QUERY SIZE:/ { print $NF }')
rsize=$(echo "$out" | awk '/MSG SIZE/ { print $NF }')
[ -n "$qsize" ] && [ -n "$rsize" ] || fail "dig: $out"
[ "$rsize" -le $((qsize * 10 > 512 ? qsize * 10 : 512)) ] || fail "outside recursion_from: $qsize -> $rsize bytes"
echo "$out" | grep -q "flags:.* tc" || fail "the over-budget answer is not TC: $out"
inside=$(on h1c2 dig @10.200.1.1 +bufsize=4096 +nocookie +ignore +tries=1 +time=3 SRV _http._tcp.amp.example.com | awk '/MSG SIZE/ { print $NF }')
[ -n "$inside" ] && [ "$inside" -gt $((qsize * 10)) ] || fail "control: inside recursion_from got '$inside' bytes"
truncated=$(metric vxgate_dns_budget_truncated_total)
[ "${truncated:-0}" -ge 1 ] || fail "vxgate_dns_budget_truncated_total '$truncated'"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
pass "DNS SRV from outside recursion_from: $qsize -> $rsize bytes ($(ratio "$rsize" "$qsize")x, TC); from a container: $inside bytes whole ($(ratio "$inside" "$qsize")x)"
