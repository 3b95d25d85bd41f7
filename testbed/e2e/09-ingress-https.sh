#!/usr/bin/env bash
# HTTPS from the client namespace: curl --resolve web.example.com:443:10.99.0.1 reaches the
# web containers on both hosts (h2's through the overlay), round robin; HTTP/2 and HTTP/1.1;
# unknown host 404, no healthy backend 503; http -> 308; TLS 1.1 refused; forwarded headers
# (issue: ingress, 6).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 2
start_vxgate 1
start_vxgate 2

seen=()
for _ in 1 2 3 4; do seen+=("$(https_get web.example.com /)"); done
[ "${seen[*]}" = "h1c1 h2c1 h1c1 h2c1" ] || [ "${seen[*]}" = "h2c1 h1c1 h2c1 h1c1" ] \
  || fail "round robin over both hosts expected, got: ${seen[*]}"
pass "round robin: ${seen[*]}"

[ "$(https_get api.example.com / --http2 -o /dev/null -w '%{http_version}')" = 2 ] || fail "HTTP/2"
[ "$(https_get api.example.com / --http1.1 -o /dev/null -w '%{http_version}')" = 1.1 ] || fail "HTTP/1.1"
pass "HTTP/2 and HTTP/1.1 (ALPN)"

code=$(https_get nothing.example.com / -o /dev/null -w '%{http_code}')
[ "$code" = 404 ] || fail "unknown host: $code"
pass "unknown host -> 404"

loc=$(on cl curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' --resolve web.example.com:80:10.99.0.1 'http://web.example.com/a?b=1')
[ "$loc" = "308 https://web.example.com/a?b=1" ] || fail "redirect: $loc"
pass "http -> 308 https://web.example.com/a?b=1"

sclient() { on cl timeout 10 openssl s_client -connect 10.99.0.1:443 -servername web.example.com "$@" </dev/null 2>&1 || true; }
# TLS 1.1: the client must really offer it (SECLEVEL=0, else OpenSSL 3 refuses by itself with
# "no protocols available"), and the refusal must be the server's alert
out=$(sclient -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0')
[[ $out != *"no protocols available"* ]] || fail "the client did not offer TLS 1.1: $out"
[[ $out == *"SSL alert number"* && $out == *"Cipher is (NONE)"* ]] || fail "TLS 1.1 not refused by the server: $out"
out=$(sclient -tls1_2)
[[ $out =~ New,\ TLSv1\.2,\ Cipher\ is\ ECDHE-[A-Z0-9-]+-GCM-SHA|New,\ TLSv1\.2,\ Cipher\ is\ ECDHE-[A-Z0-9-]+-CHACHA20 ]] \
  || fail "TLS 1.2 with an AEAD suite not negotiated: $out"
out=$(sclient -tls1_3)
[[ $out =~ New,\ TLSv1\.3,\ Cipher\ is\ TLS_ ]] || fail "TLS 1.3 not negotiated: $out"
pass "TLS 1.1 offered and refused by the server's alert; TLS 1.2 (ECDHE, AEAD) and TLS 1.3 negotiated"

# the backend's response headers reach the client:
# a request to /bytes/0 returns X-Container; the forwarded headers a backend receives are
# checked in e2e 22 (GET /headers) and unit tests.
hdr=$(https_get web.example.com /bytes/0 -D - -o /dev/null)
[[ $hdr == *"x-container:"* ]] || fail "no X-Container from the backend: $hdr"
pass "responses stream back with the backend's headers"

# a service whose containers are all unhealthy: stop api backends on both hosts -> 503
for h in 1 2; do kill "$(cat "$STATE/h${h}c2.pid")"; done
for _ in $(seq 50); do
  code=$(https_get api.example.com / -o /dev/null -w '%{http_code}' || true)
  [ "$code" = 503 ] && break
  sleep 0.2
done
[ "$code" = 503 ] || fail "no healthy api backend should give 503, got $code"
pass "no healthy backend -> 503 once the checker ejected both"

# a drain keeps a request whose connection came just before it: TLS done, SIGTERM, then the
# request (0.3 s later) for a service with a container across the overlay must still be
# answered (the overlay stops after the ingress has drained), and vxgate exits 0 once it is
cat > "$LOGDIR/late.py" <<'PY'
import os, signal, socket, ssl, sys, time
pid, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=10), server_hostname="web.example.com")
os.kill(pid, signal.SIGTERM)
time.sleep(0.3)
s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.split(b"\r\n", 1)[0].decode(errors="replace") or "closed without an answer")
PY
t0=$(date +%s%N)
got=$(on cl /usr/bin/python3 "$LOGDIR/late.py" "$VX_PID_1" "$STATE/h1/tls/self-signed.crt" 2>&1) \
  || fail "the late request's client failed: $got"
rc=0
wait "$VX_PID_1" || rc=$?
took=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$rc" = 0 ] || fail "vxgate on h1 exited $rc after the drain"
[[ $got == "HTTP/1.1 200"* ]] || fail "a request sent 0.3 s into the drain on a connection made before it: $got"
! grep -q "parts still busy" "$LOGDIR/vxgate-h1.log" || fail "the drain ran into its 10 s bound"
pass "drain: a connection made just before SIGTERM had its request answered 0.3 s into the drain ($got), exit 0 after $took ms"
