#!/usr/bin/env bash
# Ingress limits: a slowloris client is cut off after header_read_timeout; an idle
# keep-alive connection is closed; an idle HTTP/2 connection after idle_timeout, its own
# keep-alive PINGs notwithstanding; connections over max_connections are closed at once; a slow
# backend gives 504 after backend_timeout; SIGTERM lets an in-flight request finish and exits 0
# (issue: ingress, 4).
. "$(dirname "$0")/lib.sh"
up --hosts 1 --containers 1
cfg=$STATE/h1-limits.toml
awk '{print} /^http_redirect/ {print "header_read_timeout_ms = 1000\nidle_timeout_ms = 3000\nmax_connections = 3\nbackend_timeout_ms = 1500\nupgrade_idle_timeout_ms = 2000"}' "$STATE/h1.toml" > "$cfg"
start_vxgate 1 "$cfg"
CA=$STATE/h1/tls/self-signed.crt

on cl /usr/bin/python3 - "$CA" > "$LOGDIR/limits.txt" 2>&1 <<'PY' || fail "$(cat "$LOGDIR/limits.txt")"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
def conn():
    return ctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=10), server_hostname="web.example.com")
def closed_within(s, secs):
    s.settimeout(secs)
    t = time.time()
    try:
        while s.recv(4096):
            pass
        return time.time() - t
    except (socket.timeout, TimeoutError):
        return None
    except (ConnectionError, ssl.SSLError):
        return time.time() - t

def refused():
    """Whether a new connection is closed without an answer (max_connections reached)."""
    try:
        extra = conn()
        extra.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
        got = extra.recv(4096)
    except (ConnectionError, ssl.SSLError, OSError):
        got = b""
    if got:
        print(f"served: {got[:40]!r}")
    return got == b""

# slowloris: half a request head, then nothing
s = conn(); s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\nX-Slow: ")
t = closed_within(s, 5)
assert t is not None and t < 3, f"slowloris connection not closed in time: {t}"
print(f"slowloris closed after {t:.1f}s")

# idle keep-alive connection: one request, then silence
s = conn(); s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
assert s.recv(4096).startswith(b"HTTP/1.1 200")
t = closed_within(s, 8)
assert t is not None, "idle connection never closed"
print(f"idle keep-alive connection closed after {t:.1f}s (HTTP/1.1 waits for the next head under header_read_timeout)")

# an idle HTTP/2 connection: the server's own keep-alive PINGs (every idle_timeout / 2) and
# their ACKs are not use; it is closed by idle_timeout (3 s), with a GOAWAY, not kept for ever
import h2.config, h2.connection, h2.events, h2.exceptions
hctx = ssl.create_default_context(cafile=sys.argv[1])
hctx.set_alpn_protocols(["h2"])
s = hctx.wrap_socket(socket.create_connection(("10.99.0.1", 443), timeout=10), server_hostname="web.example.com")
assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
c.initiate_connection()
c.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "web.example.com"), (":path", "/")], end_stream=True)
s.sendall(c.data_to_send())
t0, pings, status, goaway, t_goaway = time.time(), 0, None, None, None
s.settimeout(1)
while time.time() - t0 < 15:
    try:
        data = s.recv(65535)
    except (socket.timeout, TimeoutError):
        continue
    except (ConnectionError, ssl.SSLError):
        data = b""
    if not data:
        break
    try:
        events = c.receive_data(data)
    except h2.exceptions.ProtocolError:
        # a graceful close is GOAWAY then PING (RFC 9113 6.8), and h2 refuses frames once a
        # GOAWAY closed the connection: the CLOSED state means the GOAWAY came
        if c.state_machine.state != h2.connection.ConnectionState.CLOSED:
            raise
        if goaway is None:
            goaway, t_goaway = "GOAWAY", time.time() - t0
        continue
    for e in events:
        if isinstance(e, h2.events.ResponseReceived):
            status = dict(e.headers).get(b":status")
            t0 = time.time()   # idle from the end of the request
        elif isinstance(e, h2.events.DataReceived):
            c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        elif isinstance(e, h2.events.PingReceived):
            pings += 1
        elif isinstance(e, h2.events.ConnectionTerminated):
            goaway, t_goaway = e.error_code, time.time() - t0
    out = c.data_to_send()
    if out:
        try:
            s.sendall(out)   # PING ACKs (h2 queues them by itself)
        except (ConnectionError, ssl.SSLError):
            break
t = time.time() - t0
assert status == b"200", f"h2 request: {status}"
assert pings >= 1, f"no keep-alive PING in {t:.1f}s (the control: PINGs must have flowed)"
assert goaway is not None, f"idle h2 connection not closed with a GOAWAY in {t:.1f}s ({pings} PINGs acked)"
assert 2.5 <= t_goaway <= 8, f"GOAWAY after {t_goaway:.1f}s; expected idle_timeout (3 s), not header_read_timeout (1 s)"
assert t <= 12, f"after its GOAWAY (whose PING this client leaves unanswered) the connection was still open at {t:.1f}s"
print(f"idle h2 connection: {pings} keep-alive PINGs acked, GOAWAY after {t_goaway:.1f}s (idle_timeout 3 s); the GOAWAY's PING left unanswered, closed after {t:.1f}s")
s.close()

# max_connections = 3: the fourth is closed at once, and served again once one goes
held = [conn() for _ in range(3)]
time.sleep(0.2)
assert refused(), "fourth connection was served"
held.pop().close()
time.sleep(0.3)
s = conn(); s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
assert s.recv(4096).startswith(b"HTTP/1.1 200"), "not served after a slot freed"
print("max_connections: the fourth connection was refused, served after one closed")
for h in held: h.close()
time.sleep(0.3)

# upgraded (WebSocket) connections keep their max_connections slot until they close, and an
# idle one is closed after upgrade_idle_timeout (2 s here)
import base64, os
def websocket():
    s = conn()
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: web.example.com\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:60]
    return s
ws = [websocket() for _ in range(3)]
time.sleep(0.3)   # the upgrades are done; the HTTP connections under them are finished
assert refused(), "a fourth connection was served while 3 WebSockets were open"
t0 = time.time()
for w in ws:
    t = closed_within(w, 10)
    assert t is not None, "an idle WebSocket was never closed"
idle_closed = time.time() - t0 + 0.3
assert idle_closed >= 1.5, f"idle WebSockets closed too early ({idle_closed:.1f}s)"
time.sleep(0.3)
s = conn(); s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
assert s.recv(4096).startswith(b"HTTP/1.1 200"), "not served after the WebSockets closed"
print(f"3 WebSockets held all 3 slots (a fourth connection refused); idle, they were closed after {idle_closed:.1f}s; then served again")

# a backend slower than backend_timeout -> 504
s = conn(); s.sendall(b"GET /sleep/3 HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
head = s.recv(4096)
assert head.startswith(b"HTTP/1.1 504"), head[:60]
print("slow backend -> 504")
PY
pass "$(tr '\n' ';' < "$LOGDIR/limits.txt")"

# graceful stop: a request in flight when SIGTERM arrives still gets its answer
on cl curl -sS --max-time 10 --cacert "$CA" --resolve web.example.com:443:10.99.0.1 https://web.example.com/sleep/1 > "$LOGDIR/slow.txt" &
curl_pid=$!
sleep 0.4
stop_vxgate 1
wait "$curl_pid" || fail "the in-flight request failed during shutdown"
[ "$(cat "$LOGDIR/slow.txt")" = h1c1 ] || fail "in-flight answer: $(cat "$LOGDIR/slow.txt")"
pass "SIGTERM: the in-flight request finished (h1c1), exit 0"
