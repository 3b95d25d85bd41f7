#!/usr/bin/env bash
# Zero-drop reload: HTTPS requests (keep-alive and new connections), DNS queries and a
# WebSocket keep flowing while h1's config is reloaded by SIGHUP 20 times, one of them with a
# broken config (rejected, the old one kept): no request or query fails and the WebSocket
# survives (issue: control, 5).
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
cfg=$STATE/h1-live.toml
cp "$STATE/h1.toml" "$cfg"
start_vxgate 1 "$cfg"
start_vxgate 2
CA=$STATE/h1/tls/self-signed.crt

on cl /usr/bin/python3 - "$CA" > "$LOGDIR/https.txt" 2>&1 <<'PY' &
import base64, os, socket, ssl, struct, sys, threading, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
END = time.time() + 9
res = {"keepalive": [0, 0], "new": [0, 0], "ws": [0, 0]}
def conn():
    return ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=5), server_hostname="web.example.com")
def read_response(f):
    status = f.readline()
    length = 0
    while (line := f.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    f.read(length)
    return status.startswith(b"HTTP/1.1 200")
def keepalive():
    s = conn(); f = s.makefile("rb")
    while time.time() < END:
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
            res["keepalive"][0 if read_response(f) else 1] += 1
        except Exception as e:
            res["keepalive"][1] += 1; print("keepalive:", e, file=sys.stderr)
            s = conn(); f = s.makefile("rb")
def new():
    while time.time() < END:
        try:
            s = conn(); s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
            res["new"][0 if read_response(s.makefile("rb")) else 1] += 1
            s.close()
        except Exception as e:
            res["new"][1] += 1; print("new:", e, file=sys.stderr)
def ws():
    s = conn()
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: web.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    f = s.makefile("rb")
    assert b" 101 " in f.readline()
    while f.readline() not in (b"\r\n", b""):
        pass
    i = 0
    while time.time() < END:
        msg = f"tick {i}".encode(); i += 1
        try:
            s.sendall(struct.pack("!BB", 0x81, 0x80 | len(msg)) + b"\0\0\0\0" + msg)
            head = f.read(2)
            res["ws"][0 if f.read(head[1] & 0x7F) == msg else 1] += 1
        except Exception as e:
            res["ws"][1] += 1; print("ws:", e, file=sys.stderr); return
        time.sleep(0.05)
threads = [threading.Thread(target=t) for t in (keepalive, keepalive, new, ws)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(f"{k}: {ok} ok {bad} failed" for k, (ok, bad) in res.items()))
sys.exit(1 if any(bad for _, bad in res.values()) or any(ok == 0 for ok, _ in res.values()) else 0)
PY
load=$!

on h1c1 /usr/bin/python3 - > "$LOGDIR/dns.txt" 2>&1 <<'PY' &
import socket, sys, time
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x07example\x03com\x00\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
ok = bad = 0; end = time.time() + 9
while time.time() < end:
    try:
        s.sendto(q, ("10.200.1.1", 53)); r = s.recv(512)
        ok += 1 if r[3] & 0x0F == 0 and r[7] >= 2 else 0
        bad += 0 if r[3] & 0x0F == 0 and r[7] >= 2 else 1
    except Exception as e:
        bad += 1; print("dns:", e, file=sys.stderr)
print(f"dns: {ok} ok {bad} failed")
sys.exit(1 if bad or not ok else 0)
PY
dnsload=$!

sleep 1
for i in $(seq 20); do
  if [ "$i" = 10 ]; then
    printf '\n[[containers]]\nname = "broken"\nip = "10.200.1.99"\nport = 0\n' >> "$cfg"
  elif (( i % 2 )); then
    cp "$STATE/h1.toml" "$cfg"
    printf '\n[[containers]]\nname = "extra"\nip = "10.200.1.50"\nport = 80\nlabels = { app = "extra" }\n' >> "$cfg"
  else
    cp "$STATE/h1.toml" "$cfg"
  fi
  kill -HUP "$VX_PID_1"
  sleep 0.3
done
wait "$load" || fail "HTTPS/WebSocket under reload: $(cat "$LOGDIR/https.txt")"
wait "$dnsload" || fail "DNS under reload: $(cat "$LOGDIR/dns.txt")"
kill -0 "$VX_PID_1" || fail "vxgate died during the reloads"
[ "$(grep -c 'config reloaded' "$LOGDIR/vxgate-h1.log")" = 19 ] || fail "expected 19 applied reloads: $(grep -c 'config reloaded' "$LOGDIR/vxgate-h1.log")"
grep -q "reload rejected, keeping the running config: .*h1-live.toml:.*port" "$LOGDIR/vxgate-h1.log" || fail "the broken config was not rejected"
pass "20 SIGHUPs (1 broken, rejected): $(cat "$LOGDIR/https.txt" | tail -1); $(tail -1 "$LOGDIR/dns.txt") (from h1c1 to h1's DNS)"
