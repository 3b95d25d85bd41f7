#!/usr/bin/env bash
# HTTP/2 to backends and per-service limits (issue 17, items 4 and 5): a gRPC service
# labelled vxgate.protocol=h2c is reached through TLS termination, unary and bidirectional
# streaming, trailers and grpc-status passing end to end (Python grpcio on both sides);
# vxgate.max_in_flight answers 503 beyond it, vxgate.rate answers 429 with Retry-After.
. "$(dirname "$0")/lib.sh"
up --hosts 1 --containers 3
# h1c1 web (rate 3/s), h1c2 api (max_in_flight 1), h1c3 becomes the gRPC service on 50051
cfg=$STATE/h1-grpc.toml
awk '
  /^name = "h1c1"/ { c = 1 } /^name = "h1c2"/ { c = 2 } /^name = "h1c3"/ { c = 3 }
  /^port = / && c == 3 { print "port = 50051"; next }
  /^labels = / && c == 1 { print "labels = { app = \"web\", \"vxgate.rate\" = \"3/s\" }"; next }
  /^labels = / && c == 2 { print "labels = { app = \"api\", \"vxgate.max_in_flight\" = \"1\" }"; next }
  /^labels = / && c == 3 { print "labels = { app = \"grpc\", \"vxgate.protocol\" = \"h2c\" }"; next }
  { print }' "$STATE/h1.toml" > "$cfg"
grep -q 'h2c' "$cfg" && grep -q 'port = 50051' "$cfg" || fail "config not rewritten: $(cat "$cfg")"
on h1c3 /usr/bin/python3 "$TESTBED/grpc-echo.py" server 50051 h1c3 > "$LOGDIR/grpc-server.log" 2>&1 &
for _ in $(seq 100); do on h1c3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/50051' 2>/dev/null && break; sleep 0.1; done
start_vxgate 1 "$cfg"
CA=$STATE/h1/tls/self-signed.crt

out=$(on cl timeout 60 /usr/bin/python3 "$TESTBED/grpc-echo.py" client 10.99.0.1:443 grpc.example.com "$CA" 2>&1) \
  || fail "gRPC client: $out"
echo "$out" | grep -qx "unary h1c3:ping OK h1c3" || fail "unary: $out"
echo "$out" | grep -qx "stream h1c3:m0,h1c3:m1,h1c3:m2,h1c3:m3,h1c3:m4 OK h1c3" || fail "stream: $out"
echo "$out" | grep -qx "fail PERMISSION_DENIED no entry" || fail "grpc-status of a failed call: $out"
pass "gRPC through TLS termination to an h2c backend: unary, bidirectional stream of 5, trailers and a non-OK grpc-status end to end"

# the active health checks speak h2c to it: healthy, and still so after 4 intervals (1 s,
# fall 2: an HTTP/1.1 GET, which a gRPC server cannot answer, would have ejected it)
stays_healthy 1 h1c3
out=$(on cl timeout 60 /usr/bin/python3 "$TESTBED/grpc-echo.py" client 10.99.0.1:443 grpc.example.com "$CA" 2>&1) \
  || fail "gRPC client after 4 health intervals: $out"
echo "$out" | grep -qx "unary h1c3:ping OK h1c3" || fail "unary after 4 health intervals: $out"
pass "the h2c backend passes its active health checks (healthy after 4 intervals) and still serves"

# max_in_flight = 1: while one slow request is on api, the next gets 503 with Retry-After
on cl curl -sS --max-time 10 --cacert "$CA" --resolve api.example.com:443:10.99.0.1 \
  -o "$LOGDIR/slow.txt" https://api.example.com/sleep/2 &
slow=$!
sleep 0.5
busy=$(on cl curl -sS --max-time 10 --cacert "$CA" --resolve api.example.com:443:10.99.0.1 \
  -o /dev/null -D - -w '%{http_code}' https://api.example.com/ | tr -d '\r')
wait "$slow" || fail "the slow request failed"
grep -qx h1c2 "$LOGDIR/slow.txt" || fail "the slow request: $(cat "$LOGDIR/slow.txt")"
echo "$busy" | tail -1 | grep -qx 503 && echo "$busy" | grep -qi '^retry-after: 1$' || fail "second request while one is in flight: $busy"
after=$(on cl curl -sS --max-time 10 --cacert "$CA" --resolve api.example.com:443:10.99.0.1 -o /dev/null -w '%{http_code}' https://api.example.com/)
[ "$after" = 200 ] || fail "after the slow one finished: $after"
pass "vxgate.max_in_flight=1: 503 with Retry-After: 1 while a request is in flight, 200 once it is done"

# rate 3/s per client: of 6 quick requests, 3 pass and 3 get 429 with Retry-After
codes=$(on cl /usr/bin/python3 - "$CA" <<'PY'
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
out = []
for _ in range(6):
    c = http.client.HTTPSConnection("10.99.0.1", 443, context=ctx, timeout=10)
    c.sock = ctx.wrap_socket(__import__("socket").create_connection(("10.99.0.1", 443)), server_hostname="web.example.com")
    c.request("GET", "/", headers={"Host": "web.example.com"})
    r = c.getresponse()
    r.read()
    out.append(f"{r.status}:{r.getheader('Retry-After') or '-'}")
    c.close()
print(" ".join(out))
PY
)
[ "$codes" = "200:- 200:- 200:- 429:1 429:1 429:1" ] || fail "6 requests at a 3/s limit: $codes"
limited=$(on h1 curl -sS http://127.0.0.1:9180/metrics | awk '/^vxgate_http_limited_total/ { printf "%s=%s ", $1, $2 }')
echo "$limited" | grep -q 'reason="rate"}=3' && echo "$limited" | grep -q 'reason="in_flight"}=1' || fail "limit counters: $limited"
sleep 1.1
again=$(on cl curl -sS --max-time 10 --cacert "$CA" --resolve web.example.com:443:10.99.0.1 -o /dev/null -w '%{http_code}' https://web.example.com/)
[ "$again" = 200 ] || fail "after a second the bucket refilled: $again"
pass "vxgate.rate=3/s: $codes; a second later 200 again; counted ($limited)"
