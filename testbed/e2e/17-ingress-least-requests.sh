#!/usr/bin/env bash
# load_balancing = "least_requests" (power of two choices): while one backend works on a slow
# request, new requests go to the idle one; once both are idle both get requests
# (issue: ingress, 2).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
cfg=$STATE/h1-lr.toml
awk '{print} /^http_redirect/ {print "load_balancing = \"least_requests\""}' "$STATE/h1.toml" > "$cfg"
start_vxgate 1 "$cfg"
start_vxgate 2
on cl /usr/bin/python3 - "$STATE/h1/tls/self-signed.crt" > "$LOGDIR/lr.txt" 2>&1 <<'PY' || fail "$(cat "$LOGDIR/lr.txt")"
import socket, ssl, sys, threading, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
def get(path):
    s = ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=10), server_hostname="web.example.com")
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:40]
    return body.strip().decode()
# one slow request keeps one backend busy for 2 s; meanwhile every quick request must go to
# the other one (round robin would send every second one to the busy backend)
slow = []
t = threading.Thread(target=lambda: slow.append(get("/sleep/2")))
t.start()
time.sleep(0.4)
quick = [get("/") for _ in range(12)]
t.join()
print(f"slow request on {slow[0]}; the 12 quick ones meanwhile went to {sorted(set(quick))}")
assert slow[0] not in quick, quick
after = {get("/") for _ in range(12)}
assert after == {"h1c1", "h2c1"}, f"both backends once idle again: {after}"
PY
pass "$(cat "$LOGDIR/lr.txt")"
