#!/usr/bin/env bash
# Requests the proxy cannot forward as they are get a 4xx from vxgate and never count against
# a backend (issue 14): OPTIONS *, CONNECT, a Host that disagrees with the target's authority,
# two Host headers, a malformed chunked body, a Host unfit for the redirect's Location; after
# each, every web backend is still serving (positive control: the same count as before). The
# backend gets the Host it was routed by, all X-Forwarded-For lines, and vxgate's own
# Forwarded element whatever the client sent. The generated certificate is valid for a year.
. "$(dirname "$0")/lib.sh"
up --hosts 1 --containers 3   # h1c1, h1c3: web; h1c2: api
start_vxgate 1
CA=$STATE/h1/tls/self-signed.crt

# raw REQUEST over TLS to h1's ingress; prints the response (head and body)
raw() {
  on cl /usr/bin/python3 - "$CA" "$1" <<'PY'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=10), server_hostname="web.example.com")
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
data = b""
try:
    while chunk := s.recv(65536):
        data += chunk
except (socket.timeout, ConnectionError, ssl.SSLError):
    pass
sys.stdout.write(data.decode("latin-1"))
PY
}
status() { raw "$1" | head -1 | awk '{print $2}'; }
serving() { on h1 curl -sS --max-time 5 http://127.0.0.1:9180/v1/services | /usr/bin/python3 -c '
import json, sys
print({s["name"]: s["serving"] for s in json.load(sys.stdin)}.get("web", -1))'; }

before=$(serving)
[ "$before" = 2 ] || fail "web should have 2 serving backends at start, has $before"

check() {  # NAME EXPECTED_STATUS REQUEST
  local got
  got=$(status "$3")
  [ "$got" = "$2" ] || fail "$1: answered '$got', expected $2"
  sleep 0.2
  [ "$(serving)" = "$before" ] || fail "$1: web lost backends (serving $(serving), was $before)"
  echo "$1 -> $got, web still serving $before"
}
check "OPTIONS *" 400 'OPTIONS * HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n'
check "CONNECT" 405 'CONNECT web.example.com:443 HTTP/1.1\r\nHost: web.example.com:443\r\nConnection: close\r\n\r\n'
check "absolute-form for api with Host web" 400 'GET http://api.example.com/ HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n'
check "two Host headers" 400 'GET / HTTP/1.1\r\nHost: web.example.com\r\nHost: api.example.com\r\nConnection: close\r\n\r\n'
check "malformed chunked body" 400 'POST / HTTP/1.1\r\nHost: web.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n'
# positive controls: the same shapes, well formed, are forwarded
check "absolute-form agreeing with Host" 200 'GET http://web.example.com/ HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n'
check "a well-formed chunked body" 200 'POST / HTTP/1.1\r\nHost: web.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n'
# HTTP/2 (python3-h2; curl would turn Host into :authority): :authority and host that differ,
# and the control where they agree
h2req() {
  on cl /usr/bin/python3 - "$CA" "$1" <<'PY'
import socket, ssl, sys
import h2.config, h2.connection, h2.events
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.set_alpn_protocols(["h2"])
s = ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=10), server_hostname="web.example.com")
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
c.initiate_connection()
c.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "web.example.com"),
                   (":path", "/"), ("host", sys.argv[2])], end_stream=True)
s.sendall(c.data_to_send())
while True:
    data = s.recv(65536)
    if not data:
        print("closed"); break
    for e in c.receive_data(data):
        if isinstance(e, h2.events.ResponseReceived):
            print(dict(e.headers)[b":status"].decode()); sys.exit(0)
        if isinstance(e, h2.events.StreamReset):
            print("reset"); sys.exit(0)
    s.sendall(c.data_to_send())
PY
}
code=$(h2req api.example.com)
[ "$code" = 400 ] || fail "h2 :authority web.example.com with host api.example.com answered $code"
[ "$(h2req web.example.com)" = 200 ] || fail "h2 with agreeing :authority and host did not answer 200"
[ "$(serving)" = "$before" ] || fail "h2 host mismatch cost web backends"
pass "OPTIONS *, CONNECT, host mismatch (h1 and h2: $code), duplicate Host, bad chunking answered 4xx by vxgate; web kept its $before backends; well-formed controls forwarded"

# what the backend receives: the routed Host, every X-Forwarded-For line, vxgate's Forwarded
heads=$(raw 'GET /headers HTTP/1.1\r\nHost: web.example.com\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 192.0.2.2\r\nForwarded: for="192.0.2.9\r\nConnection: close\r\n\r\n')
echo "$heads" | grep -q '^HTTP/1.1 200' || fail "GET /headers: $heads"
echo "$heads" | grep -qi '^host: web.example.com' || fail "the backend did not get Host web.example.com: $heads"
echo "$heads" | grep -qi '^x-forwarded-for: 192.0.2.1, 192.0.2.2, 10.99.0.100' || fail "X-Forwarded-For lines lost: $heads"
echo "$heads" | grep -qi '^forwarded: for=10.99.0.100;proto=https;host="web.example.com"' || fail "vxgate's Forwarded element lost: $heads"
[ "$(echo "$heads" | grep -ci '^host:')" = 1 ] || fail "the backend got several Host lines: $heads"
heads=$(raw 'GET http://WEB.example.com/headers HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n')
echo "$heads" | grep -qi '^host: WEB.example.com' || fail "absolute-form: the backend did not get the routed host: $heads"
pass "the backend got the routed Host, X-Forwarded-For '192.0.2.1, 192.0.2.2, 10.99.0.100', and vxgate's own Forwarded element despite the client's unclosed quote"

# the redirect listener puts only a host name into Location
loc=$(on cl curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Host: web.example.com' http://10.99.0.1/x)
[ "$loc" = "308 https://web.example.com/x" ] || fail "redirect: $loc"
code=$(on cl curl -sS -o /dev/null -w '%{http_code}' -H 'Host: web.example.com@evil.com' http://10.99.0.1/x)
[ "$code" = 400 ] || fail "redirect with Host web.example.com@evil.com answered $code"
pass "redirect: 308 to https://web.example.com/x; Host 'web.example.com@evil.com' -> 400"

# the generated certificate: valid now, for about a year
end=$(openssl x509 -in "$CA" -noout -enddate | cut -d= -f2)
days=$(( ($(date -d "$end" +%s) - $(date +%s)) / 86400 ))
start=$(openssl x509 -in "$CA" -noout -startdate | cut -d= -f2)
(( days >= 360 && days <= 366 )) || fail "self-signed certificate valid for $days more days (until $end)"
(( $(date -d "$start" +%s) <= $(date +%s) )) || fail "self-signed certificate not valid yet ($start)"
pass "self-signed certificate valid from $start until $end ($days days)"
