#!/usr/bin/env bash
# SNI chooses between two configured certificates (the first is the default); SIGHUP re-reads
# the certificate files: new handshakes get the new certificate, an open connection carries on
# (issue: ingress, 1 and 6).
. "$(dirname "$0")/lib.sh"
up --hosts 1 --containers 1
mk() { # name cn san
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$LOGDIR/$1.key" -out "$LOGDIR/$1.crt" -subj "/CN=$2" -addext "subjectAltName=$3" 2>/dev/null
}
mk com example.com "DNS:example.com,DNS:*.example.com"
mk other other.test "DNS:*.other.test"
cfg=$STATE/h1-sni.toml
awk -v d="$LOGDIR" '{print} /^http_redirect/ {print "\n[[ingress.certs]]\ncert = \"" d "/com.crt\"\nkey = \"" d "/com.key\"\n\n[[ingress.certs]]\ncert = \"" d "/other.crt\"\nkey = \"" d "/other.key\""}' "$STATE/h1.toml" > "$cfg"
"$VXGATE" check --config "$cfg" >/dev/null || fail "config with two certs rejected"
start_vxgate 1 "$cfg"

subject() { on cl timeout 10 openssl s_client -connect 10.99.0.1:443 -servername "$1" </dev/null 2>/dev/null | openssl x509 -noout -subject; }
[[ $(subject web.example.com) == *"CN = example.com"* ]] || fail "SNI web.example.com: $(subject web.example.com)"
[[ $(subject api.other.test) == *"CN = other.test"* ]] || fail "SNI api.other.test: $(subject api.other.test)"
[[ $(subject unknown.invalid) == *"CN = example.com"* ]] || fail "unknown SNI should get the default"
pass "SNI picks example.com / other.test, unknown names get the first"

# a long-lived connection: a WebSocket that keeps echoing across the reload
on cl /usr/bin/python3 - "$LOGDIR/com.crt" > "$LOGDIR/ws.txt" 2>&1 <<'PY' &
import base64, os, socket, ssl, struct, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=10), server_hostname="web.example.com")
s.sendall(b"GET /ws HTTP/1.1\r\nHost: web.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
f = s.makefile("rb")
assert b" 101 " in f.readline()
while f.readline() not in (b"\r\n", b""):
    pass
for i in range(30):
    msg = f"tick {i}".encode()
    s.sendall(struct.pack("!BB", 0x81, 0x80 | len(msg)) + b"\0\0\0\0" + msg)
    head = f.read(2)
    assert f.read(head[1] & 0x7F) == msg, i
    time.sleep(0.1)
print("30 echoes across the reload")
PY
ws=$!
sleep 1
mk com example.com "DNS:example.com,DNS:*.example.com"   # a renewed certificate, same paths
kill -HUP "$VX_PID_1"
for _ in $(seq 20); do grep -q "ingress certificates reloaded" "$LOGDIR/vxgate-h1.log" && break; sleep 0.1; done
grep -q "ingress certificates reloaded" "$LOGDIR/vxgate-h1.log" || fail "no reload logged"
new=$(openssl x509 -in "$LOGDIR/com.crt" -noout -fingerprint -sha256)
got=$(on cl timeout 10 openssl s_client -connect 10.99.0.1:443 -servername web.example.com </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256)
[ "$new" = "$got" ] || fail "after SIGHUP the new certificate should be served: $got vs $new"
wait "$ws" || fail "the open WebSocket broke across the reload: $(cat "$LOGDIR/ws.txt")"
pass "SIGHUP: new handshakes get the renewed certificate; $(cat "$LOGDIR/ws.txt")"
